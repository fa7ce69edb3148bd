"""Open only regular files: a FIFO would block forever, a device or a /proc file never ends.

Every file the user names (the checkpoint, ``--metadata``, ``--module``) and every small file a
reader parses whole goes through here first.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from topology.vocabulary.errors import ConversionError

# Pseudo file systems whose "regular" files are endless or have side effects.
_PSEUDO_ROOTS = ("/proc/", "/sys/", "/dev/")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")
MAX_JSON_DEPTH = 64  # deeper JSON is not something a user or Orbax writes


def regular_bytes(folder: Path, refuse_special: bool = False) -> int:
    """Bytes of the regular files under ``folder``; symlinks count nothing, and so do special files
    unless ``refuse_special`` (a reader about to open them), which makes one NOT_A_REGULAR_FILE.

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "a").write_bytes(b"12345")
        >>> regular_bytes(d)
        5
    """
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
            elif refuse_special and not stat.S_ISLNK(info.st_mode):  # a FIFO would block a read forever
                raise ConversionError(
                    "NOT_A_REGULAR_FILE", f"{os.path.join(root, name)} in the checkpoint is not a regular file",
                    "a checkpoint holds only regular files; copy it again",
                )
    return total


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a plain file to read (None when it is one).

    Example:
        >>> regular_file_problem(Path("/dev/null"))
        'a character device'
    """
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    if real.startswith(_PSEUDO_ROOTS) or real in ("/proc", "/sys", "/dev"):
        return f"a file of the pseudo file system /{real.split('/')[1]}"
    return None


def require_regular_file(path: Path, what: str) -> None:
    """Raise ``NOT_A_REGULAR_FILE`` unless ``path`` is a plain file.

    Example:
        >>> require_regular_file(Path("/dev/zero"), "--metadata")
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: NOT_A_REGULAR_FILE: --metadata /dev/zero is a character device, not a regular file
    """
    problem = regular_file_problem(Path(path))
    if problem is not None and not problem.startswith("unreadable"):
        raise ConversionError(
            "NOT_A_REGULAR_FILE", f"{what} {path} is {problem}, not a regular file",
            "give a regular file saved on disk (copy the data into a file first)",
        )


def read_small_file(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (``FILE_TOO_LARGE`` beyond).

    Example:
        >>> import tempfile; f = Path(tempfile.mkdtemp()) / "a"; _ = f.write_bytes(b"{}")
        >>> read_small_file(f, 10, "--metadata")
        b'{}'
    """
    require_regular_file(path, what)
    # O_NONBLOCK: a FIFO swapped in after the check opens without waiting for a writer.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConversionError("NOT_A_REGULAR_FILE", f"{what} {path} is not a regular file",
                                  "give a regular file saved on disk")
        parts, size = [], 0
        while size <= limit and (chunk := handle.read(min(1 << 20, limit + 1 - size))):
            parts.append(chunk)  # in blocks: read(n) would allocate all n bytes up front
            size += len(chunk)
        data = b"".join(parts)
    if len(data) > limit:
        raise ConversionError("FILE_TOO_LARGE", f"{what} {path} is larger than {limit:,} bytes",
                              "this file should be small; check that the right file was given")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` without NaN/Infinity, deep nesting (ValueError), or non-finite floats.

    Example:
        >>> loads_strict_json('{"a": [1, 2]}')
        {'a': [1, 2]}
        >>> loads_strict_json('[NaN]')
        Traceback (most recent call last):
        ValueError: NaN is not valid JSON
    """
    _check_depth(text, max_depth)
    value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a float")
    return value


def _check_depth(text: str | bytes, max_depth: int) -> None:
    """Nesting depth from brackets outside strings, before json (which recurses) sees the text."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', data)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise ValueError(f"JSON nested more than {max_depth} levels deep")
        else:
            depth -= 1
