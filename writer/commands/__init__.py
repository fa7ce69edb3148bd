"""The CLI's commands, one home each (a module or a package): its parser (flags from :mod:`writer.flags`) and its body.

``convert`` (+ ``all_steps``), ``inspect``, ``verify`` (the checks themselves are the library
:mod:`writer.verify`, shared with ``convert --verify``, export and the studio), ``export`` (the
``export-savedmodel`` command: ``savedmodel`` + the isolated ``worker``), ``demo`` and ``studio``.

:mod:`writer.cli` imports a command's module only when that command runs, so ``--help`` and
``--version`` load none of them, and a conversion never loads verify or the SavedModel export.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from writer.term import Style


def print_checked_report(report: Any, args: argparse.Namespace, failure: Callable[[], str]) -> int:
    """Print a checking command's report (``--json``, ``-q`` or rendered); 0 when it passed, else 1.

    With ``-q`` a failure still prints one line, ``failure()``, on stderr. Shared by ``verify``
    and ``export-savedmodel``.

    Example:
        >>> class Passed:
        ...     passed = True
        ...     def to_json(self): return {"passed": True}
        >>> print_checked_report(Passed(), argparse.Namespace(json=True, quiet=False), lambda: "")
        {
          "passed": true
        }
        0
    """
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif not args.quiet:
        print(report.render(Style(sys.stdout)))
    if not report.passed:
        if args.quiet:
            print(failure(), file=sys.stderr)
        return 1
    return 0
