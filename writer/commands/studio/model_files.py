"""The files of a finished conversion as the studio serves them: confined to the output folder.

Served are ``model.json`` and the shard names its ``weightsManifest`` lists, when each is a
plain name (no ``/``, no ``..``, not hidden), a regular file, and not a symlink. Anything
else in or around the folder, however it got there, is not reachable through the studio.

Example:
    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "model.json").write_text(json.dumps({"weightsManifest": [
    ...     {"paths": ["group1-shard1of1.bin", "../secret", "/etc/passwd"]}]}))
    >>> sorted(served_names(folder))
    ['group1-shard1of1.bin', 'model.json']
"""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

MAX_MODEL_JSON_BYTES = 64 << 20  # topology and manifest; weights are in the shards
PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file and not a symlink (``OSError`` otherwise).

    ``O_NONBLOCK`` keeps a FIFO put in its place from blocking the open.

    Example:
        >>> open_regular(Path("/dev/null"))
        Traceback (most recent call last):
        IsADirectoryError: /dev/null is not a regular file
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def served_names(folder: Path) -> set[str]:
    """``model.json`` plus the plain shard names of its manifest (empty when model.json is unusable)."""
    try:
        with open_regular(folder / "model.json") as file:
            if os.fstat(file.fileno()).st_size > MAX_MODEL_JSON_BYTES:
                return set()
            doc = json.loads(file.read())
    except (OSError, ValueError, RecursionError):
        return set()
    names = {"model.json"}
    groups = doc.get("weightsManifest") if isinstance(doc, dict) else None
    for group in groups if isinstance(groups, list) else []:
        paths = group.get("paths") if isinstance(group, dict) else None
        for name in paths if isinstance(paths, list) else []:
            if isinstance(name, str) and PLAIN_NAME.fullmatch(name):
                names.add(name)
    return names
