"""Find the command blocks of the docs that show output, run them, and compare what they print.

A fenced block whose first line starts with ``$ `` is a console session: every ``$ `` line is a
command (continued by a trailing backslash or a ``<<'EOF'`` here-document), the lines after it are
what it prints. Two HTML comments steer the run, each on the line right before a fence:

* ``<!-- not-run: reason -->``: the block is not executed (a server that never exits, a
  TensorFlow-only environment, ...); the docs test lists these blocks with their reason.
* ``<!-- file: path -->``: the block's text is written to ``path`` (relative to the run folder)
  before the commands after it run, so a doc can show a model file and then convert it.

Comparison masks what legitimately varies: timings (``done in 0.09 s``, ``37.7 ms``), absolute
paths, runs of spaces (column alignment shifts when a timing is one digit wider) and the
progress-bar lines a terminal shows. ``...`` in the expected output matches anything (a whole line
of ``...`` matches any number of lines), as in doctest's ELLIPSIS.

Example:
    >>> blocks = parse_doc_text("```console\\n$ echo hi\\nhi\\n```\\n", "x.md")
    >>> [(c.command, c.expected) for c in blocks[0].commands]
    [('echo hi', ['hi'])]
    >>> matches(["done in 9.1 s", "hi"], "done in 0.09 s\\nhi") is None    # timings are masked
    True
    >>> matches(["converted ...", "..."], "converted a -> b\\nline\\nline") is None
    True
    >>> print(matches(["hi"], "ho"))
    --- doc
    +++ actual
    @@ -1 +1 @@
    -hi
    +ho
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*(not-run|file):\s*(.*?)\s*-->\s*$")
_HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)'?\"?")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TIMING = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s)\b")
# An absolute path: a slash that does not continue a relative path or a word (examples/x stays).
_ABS_PATH = re.compile(r"(?<![\w.~/-])/(?:[\w.+@-]+/?)+")
_PROGRESS_BAR = re.compile(r"\[[# .=-]{10,}\]\s+\d+%")


@dataclass
class Command:
    """One ``$`` command of a block and the lines the doc says it prints."""

    command: str
    expected: list[str]
    line: int


@dataclass
class Block:
    """A fenced block: a console session to run, or a file to write (``write_to``)."""

    doc: str
    line: int
    commands: list[Command] = field(default_factory=list)
    not_run: str | None = None
    write_to: str | None = None
    text: str = ""

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def parse_doc_text(text: str, doc: str) -> list[Block]:
    """The console sessions and file blocks of one Markdown text, in document order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        directive = _DIRECTIVE.match(lines[start - 1]) if start else None
        block = Block(doc=doc, line=start + 1, text="\n".join(body) + "\n")
        if directive and directive.group(1) == "file":
            block.write_to = directive.group(2)
            blocks.append(block)
            continue
        if not body or not body[0].startswith("$ "):
            continue
        if directive:
            block.not_run = directive.group(2)
        block.commands = _commands(body, start + 2)
        blocks.append(block)
    return blocks


def _commands(body: list[str], first_line: int) -> list[Command]:
    commands: list[Command] = []
    j = 0
    while j < len(body):
        line = body[j]
        if not line.startswith("$ "):
            commands[-1].expected.append(line)
            j += 1
            continue
        command, line_no = line[2:], first_line + j
        j += 1
        while command.endswith("\\") and j < len(body):
            command += "\n" + body[j]
            j += 1
        heredoc = _HEREDOC.search(command)
        if heredoc:
            while j < len(body):
                command += "\n" + body[j]
                j += 1
                if body[j - 1].strip() == heredoc.group(1):
                    break
        commands.append(Command(command=command, expected=[], line=line_no))
    return commands


def parse_doc(path: Path, root: Path) -> list[Block]:
    """``parse_doc_text`` of a file, named relative to ``root``."""
    return parse_doc_text(path.read_text(encoding="utf-8"), path.relative_to(root).as_posix())


def normalize(text: str) -> list[str]:
    """Output lines with colours, timings, absolute paths and column padding masked."""
    out = []
    for line in _ANSI.sub("", text).replace("\r", "\n").splitlines():
        if _PROGRESS_BAR.search(line):
            continue  # drawn on a terminal only; the docs' runs are piped
        line = _ABS_PATH.sub("<path>", _TIMING.sub("<time>", line))
        out.append(re.sub(r"[ \t]+", " ", line).strip())
    while out and not out[-1]:
        out.pop()
    return out


def matches(expected: list[str], actual: str) -> str | None:
    """None when ``actual`` prints what ``expected`` shows, else a readable difference."""
    want = "\n".join(normalize("\n".join(expected)))
    got = "\n".join(normalize(actual))
    pattern = re.escape(want).replace(re.escape("..."), ".*?")
    if re.fullmatch(pattern, got, re.S):
        return None
    diff = difflib.unified_diff(want.splitlines(), got.splitlines(), "doc", "actual", lineterm="")
    return "\n".join(diff)
