"""The CLI's argument parser: usage errors are ``error[BAD_OPTION]`` like every other error."""
from __future__ import annotations

import argparse

from topology.vocabulary.errors import ConversionError

PROG = "python -m writer"  # how the CLI names itself in usage lines and hints


class OptionParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are ``error[BAD_OPTION]`` like every other error.

    Example:
        >>> OptionParser(prog="flax2tfjs").parse_args(["--nope"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: ...
    """

    def error(self, message: str) -> None:  # argparse would print its own format and exit
        raise ConversionError("BAD_OPTION", message, f"see `{self.prog} --help`")
