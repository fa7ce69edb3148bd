"""The CLI's argument parser: usage errors are ``error[BAD_OPTION]`` like every other error."""
from __future__ import annotations

import argparse
import os
import sys

from topology.vocabulary.errors import ConversionError


def program_name(argv0: str | None = None) -> str:
    """How the user ran the CLI, for usage lines and hints: ``flax2tfjs`` or ``python -m writer``.

    The console script's ``sys.argv[0]`` is its own path (``.../bin/flax2tfjs``); ``python -m writer``
    gives ``.../writer/__main__.py``; called from Python code, the module form is shown.

    Example:
        >>> program_name("/home/you/.venv/bin/flax2tfjs"), program_name("/src/writer/__main__.py")
        ('flax2tfjs', 'python -m writer')
    """
    name = os.path.basename(sys.argv[0] if argv0 is None and sys.argv else argv0 or "")
    return "flax2tfjs" if name.lower().startswith("flax2tfjs") else "python -m writer"


PROG = program_name()  # read once, when the CLI is imported: before any command builds its help


class OptionParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are ``error[BAD_OPTION]`` like every other error.

    Example:
        >>> OptionParser(prog="flax2tfjs").parse_args(["--nope"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: ...
    """

    def error(self, message: str) -> None:  # argparse would print its own format and exit
        raise ConversionError("BAD_OPTION", message, f"see `{self.prog} --help`")
