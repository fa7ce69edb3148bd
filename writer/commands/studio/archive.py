"""A folder as a zip written straight into a stream: memory is one chunk, whatever the model size.

The stream need not seek (a socket): ``zipfile`` then writes a data descriptor after each
member. Timestamps are fixed, so the same folder always gives the same bytes. Only regular
files directly in the folder are archived; symlinks, FIFOs and sub-folders are left out, so
nothing outside the folder can be pulled in.

Example:
    >>> import io, tempfile, zipfile
    >>> folder = Path(tempfile.mkdtemp()) / "out"; folder.mkdir()
    >>> _ = (folder / "model.json").write_text("{}")
    >>> buffer = io.BytesIO()
    >>> write_zip(folder, buffer)
    >>> zipfile.ZipFile(buffer).namelist()
    ['out/model.json']
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import BinaryIO, Iterator

from writer.commands.studio.model_files import open_regular

CHUNK = 1 << 20
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def regular_files(folder: Path) -> Iterator[Path]:
    """The regular files directly in ``folder`` (not following symlinks), sorted by name."""
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False):
            yield folder / entry.name


def write_zip(folder: Path, stream: BinaryIO) -> None:
    """Write ``folder``'s regular files as ``NAME/FILE`` members of a deflated zip into ``stream``."""
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in regular_files(folder):
            try:
                source = open_regular(path)
            except OSError:
                continue  # replaced by a link or removed since the listing
            with source:
                info = zipfile.ZipInfo(f"{folder.name}/{path.name}", FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.file_size = os.fstat(source.fileno()).st_size  # decides zip64 before writing
                with archive.open(info, "w") as member:
                    while chunk := source.read(CHUNK):
                        member.write(chunk)
