"""Sections written by hand into docs/benchmarks.md survive a re-render of the generated page.

Some measurements are made outside ``python -m bench`` (e.g. the bounded-input table of issue 19,
measured with ``python -m tests.hostile.peak``) and written into the page by hand. Re-rendering
the page from bench/results/latest.json must not drop them: every ``## `` section of the old page
whose heading the new page lacks is put back after the section it followed.
"""
from __future__ import annotations


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading line, whole section text) in order; the part before the first heading has heading ''."""
    out: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            out.append((line.strip(), []))
        out[-1][1].append(line)
    return [(heading, "".join(lines)) for heading, lines in out]


def keep_hand_written(old: str, new: str) -> str:
    """``new`` with the sections of ``old`` that it does not generate, each after its old predecessor.

    Example:
        >>> old = "# P\\n## A\\na\\n## Hand\\nh\\n## B\\nb\\n"
        >>> print(keep_hand_written(old, "# P\\n## A\\na2\\n## B\\nb2\\n"), end="")
        # P
        ## A
        a2
        ## Hand
        h
        ## B
        b2
    """
    generated = _sections(new)
    headings = {heading for heading, _ in generated}
    after: dict[str, list[str]] = {}
    previous = ""
    for heading, body in _sections(old):
        if heading and heading not in headings:
            after.setdefault(previous, []).append(body)
        else:
            previous = heading
    if not after:
        return new
    return "".join(body + "".join(after.get(heading, [])) for heading, body in generated)
