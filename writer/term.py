"""Terminal text helpers shared by the commands: colours (on a TTY only), aligned tables, sizes.

Example:
    >>> import io
    >>> Style(io.StringIO()).red("FAIL")      # not a terminal: no escape codes
    'FAIL'
    >>> print(table([("name", "params"), ("Dense_0", "2,570")], right={1}))
    name     params
    Dense_0   2,570
"""
from __future__ import annotations

import os
from typing import Sequence, TextIO


def is_terminal(stream: TextIO) -> bool:
    """True when ``stream`` is an interactive terminal (not a pipe or file).

    Example:
        >>> import io
        >>> is_terminal(io.StringIO())
        False
    """
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def use_colour(stream: TextIO) -> bool:
    """Colours only on a terminal, and never with ``NO_COLOR`` set (https://no-color.org) or TERM=dumb.

    Example:
        >>> import io
        >>> use_colour(io.StringIO())
        False
    """
    return is_terminal(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


class Style:
    """ANSI styles that turn into plain text when the stream is not a colour terminal.

    Example:
        >>> Style(enabled=True).paint("PASS", "green")
        '\\x1b[32mPASS\\x1b[0m'
    """

    _CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.enabled = use_colour(stream) if enabled is None and stream is not None else bool(enabled)

    def paint(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        codes = ";".join(self._CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def bold(self, text: str) -> str:
        return self.paint(text, "bold")

    def dim(self, text: str) -> str:
        return self.paint(text, "dim")

    def red(self, text: str) -> str:
        return self.paint(text, "red", "bold")

    def green(self, text: str) -> str:
        return self.paint(text, "green", "bold")

    def yellow(self, text: str) -> str:
        return self.paint(text, "yellow")


def table(rows: Sequence[Sequence[str]], right: set[int] = frozenset(), indent: str = "") -> str:
    """Align ``rows`` (the first is the header) in columns; columns in ``right`` align right.

    Example:
        >>> print(table([("a", "bb"), ("ccc", "d")], indent="  "))
          a    bb
          ccc  d
    """
    widths = [max(len(str(r[i])) for r in rows if i < len(r)) for i in range(max(len(r) for r in rows))]
    lines = []
    for row in rows:
        cells = [str(c).rjust(widths[i]) if i in right else str(c).ljust(widths[i]) for i, c in enumerate(row)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def human_bytes(count: float) -> str:
    """``3297832`` -> ``'3.1 MiB'``.

    Example:
        >>> human_bytes(512), human_bytes(3297832)
        ('512 B', '3.1 MiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def shape_text(shape: Sequence | None) -> str:
    """A shape as Python prints a tuple: ``(3,)``, ``(28, 28, 1)``; ``?`` when unknown.

    Example:
        >>> shape_text((3,)), shape_text([None, 10]), shape_text(())
        ('(3,)', '(None, 10)', '()')
    """
    if shape is None:
        return "?"
    parts = ["None" if d is None else str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
