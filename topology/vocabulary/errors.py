"""One error type for every user-facing failure, with a stable code and a hint.

The CLI prints ``error[CODE]: message`` then ``hint: ...`` and exits with
:attr:`ConversionError.exit_status`; nothing else ever reaches the user as a
traceback unless ``--debug`` is given. Every code is declared once in
:mod:`topology.vocabulary.codes` and documented in ``docs/troubleshooting.md`` (tests check both);
with ``FLAX2TFJS_CHECK_CODES=1`` (the test suite sets it) an undeclared code fails loudly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from topology.vocabulary.codes import ERROR, undeclared


def check_declared(code: str, kind: str) -> None:
    """Under ``FLAX2TFJS_CHECK_CODES=1`` (tests), refuse a code :mod:`topology.vocabulary.codes` does not declare.

    Off otherwise: a user's run never stops on this check (the tests keep every raised code declared).

    Example:
        >>> check_declared("CHECKPOINT_NOT_FOUND", "error")
    """
    if os.environ.get("FLAX2TFJS_CHECK_CODES") == "1":
        problem = undeclared(code, kind)
        if problem is not None:
            raise AssertionError(f"{problem}; declare it there and document it in docs/troubleshooting.md")


class ConversionError(Exception):
    """A failure the user can act on.

    Example:
        >>> err = ConversionError("CHECKPOINT_NOT_FOUND", "no such path: ck/", "check the path")
        >>> err.render()
        'error[CHECKPOINT_NOT_FOUND]: no such path: ck/\\nhint: check the path'
    """

    exit_status = 2  # bad input or usage; internal faults exit with 1

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        check_declared(code, ERROR)
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error[{self.code}]: {self.message}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


@dataclass(frozen=True)
class Notice:
    """A warning or an applied fix, reported like errors and kept in the metadata.

    Example:
        >>> Notice("warning", "IGNORED_SUBTREE", "opt_state is not converted").render()
        'warning[IGNORED_SUBTREE]: opt_state is not converted'
    """

    kind: str  # "warning" | "fixed" | "assumption"
    code: str
    message: str

    def render(self) -> str:
        return f"{self.kind}[{self.code}]: {self.message}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "code": self.code, "message": self.message}


@dataclass
class Notices:
    """Collects notices during one conversion, in the order they were raised.

    Example:
        >>> n = Notices(); n.assume("POOLING", "2x2 average pooling after each conv")
        >>> [x.code for x in n.items]
        ['POOLING']
    """

    items: list[Notice] = field(default_factory=list)
    # Told of each notice as it is raised (the studio streams them live); not part of equality.
    listener: Callable[[Notice], None] | None = field(default=None, repr=False, compare=False)

    def _add(self, notice: Notice) -> None:
        check_declared(notice.code, notice.kind)
        self.items.append(notice)
        if self.listener is not None:
            self.listener(notice)

    def warn(self, code: str, message: str) -> None:
        self._add(Notice("warning", code, message))

    def fixed(self, code: str, message: str) -> None:
        self._add(Notice("fixed", code, message))

    def assume(self, code: str, message: str) -> None:
        self._add(Notice("assumption", code, message))

    def of_kind(self, kind: str) -> list[Notice]:
        return [n for n in self.items if n.kind == kind]
