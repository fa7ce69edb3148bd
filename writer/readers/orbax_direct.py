"""Orbax arrays read without tensorstore: OCDBT or plain-folder zarr v2, zstd or uncompressed.

Importing tensorstore costs ~0.6 s, most of a small conversion. Orbax's default layouts are simple
enough to read directly (:mod:`writer.readers.ocdbt`, :mod:`writer.readers.zarr2`,
:mod:`writer.readers.zstd_lib`). :func:`open_direct` returns ``None`` whenever anything is outside
what it reads (zarr3, another codec, a missing chunk, damage, no libzstd); the caller then uses
tensorstore, which also names any damage. ``FLAX2TFJS_ORBAX_READER=tensorstore`` forces tensorstore.

Example:
    >>> from pathlib import Path
    >>> arrays = open_direct(Path("examples/mnist_ckpt"), "zarr", True, ["params.Dense_1.bias"])
    >>> arrays["params.Dense_1.bias"].shape
    (10,)
"""
from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from writer.readers import zstd_lib
from writer.readers.ocdbt import OcdbtReader, Unreadable, file_range_reader
from topology.vocabulary.errors import ConversionError
from writer.readers.zarr2 import ForgedArray, ZarrMeta, parse_zarray, read_rows, stream_flat, streams_flat

READER_ENV = "FLAX2TFJS_ORBAX_READER"  # "tensorstore" forces the fallback (used by the equality tests)


def direct_enabled() -> bool:
    """False when the environment asks for tensorstore."""
    return os.environ.get(READER_ENV, "").strip().lower() != "tensorstore"


class DirectArray:
    """One zarr v2 array of an item folder: its metadata, and its rows read on demand."""

    def __init__(self, meta: ZarrMeta, get: Callable[[str], bytes],
                 open_chunk: Callable[[str], tuple[Callable[[int], bytes], int]] | None = None) -> None:
        self.meta = meta
        self.shape = meta.shape
        self.dtype = meta.dtype
        self._get = get
        self._open_chunk = open_chunk  # (read in steps, stored size) of a chunk: see slices

    def load(self) -> np.ndarray:
        """The whole array (raises ``Unreadable`` when it cannot be read directly)."""
        return read_rows(self.meta, self._get, 0, self.shape[0] if self.shape else 0)

    def slices(self, max_bytes: int) -> Iterator[np.ndarray]:
        """The array flat, in pieces of about ``max_bytes``.

        When its chunks hold the values in order (:func:`streams_flat`, as Orbax writes them),
        each chunk is read and decoded piece by piece; otherwise in bands of whole chunks along
        axis 0.
        """
        if self._open_chunk is not None and streams_flat(self.meta):
            yield from stream_flat(self.meta, self._open_chunk, max_bytes)
            return
        shape, rows = self.shape, self.meta.chunks[0] if self.shape else 0
        if not shape or rows >= shape[0]:
            yield self.load().reshape(-1)
            return
        row_bytes = max(1, math.prod(shape[1:]) * self.dtype.itemsize)
        band = max(rows, max_bytes // row_bytes // rows * rows)
        for start in range(0, shape[0], band):
            yield read_rows(self.meta, self._get, start, min(start + band, shape[0])).reshape(-1)


def open_direct(folder: Path, driver: str, use_ocdbt: bool, names: list[str]) -> dict[str, DirectArray] | None:
    """The arrays ``names`` of an Orbax item folder, or ``None`` when tensorstore must read them.

    A ``.zarray`` that would crash tensorstore is refused here with ``CORRUPT_CHECKPOINT``.
    """
    if driver != "zarr" or not direct_enabled() or not zstd_lib.available():
        return None
    try:
        if use_ocdbt:
            return _from_ocdbt(folder, names)
        return _from_folders(folder, names)
    except ForgedArray as exc:
        raise ConversionError(
            "CORRUPT_CHECKPOINT", f"{folder}: an array is forged: {exc}",
            "the checkpoint is damaged or forged; save it again from the training run",
        ) from exc
    except Unreadable:
        return None


def _from_ocdbt(folder: Path, names: list[str]) -> dict[str, DirectArray]:
    db = OcdbtReader(folder)

    def getter(name: str) -> Callable[[str], bytes]:
        def get(key: str) -> bytes:
            full = f"{name}/{key}".encode()
            if full not in db.values:
                raise Unreadable(f"no chunk {key} (the fallback decides if it means the fill value)")
            return db.value(full)
        return get

    def opener(name: str) -> Callable[[str], tuple[Callable[[int], bytes], int]]:
        def open_chunk(key: str) -> tuple[Callable[[int], bytes], int]:
            full = f"{name}/{key}".encode()
            if full not in db.values:
                raise Unreadable(f"no chunk {key} (the fallback decides if it means the fill value)")
            return db.value_reader(full)
        return open_chunk

    arrays = {}
    for name in names:
        key = f"{name}/.zarray".encode()
        if key not in db.values or db.value_size(key) > 1 << 20:
            raise Unreadable(f"no usable .zarray for {name}")
        arrays[name] = DirectArray(_parse(name, db.value(key)), getter(name), opener(name))
    return arrays


def _from_folders(folder: Path, names: list[str]) -> dict[str, DirectArray]:
    root = Path(os.path.realpath(folder))
    arrays = {}
    for name in names:
        array_dir = Path(os.path.realpath(root / name))
        if root not in array_dir.parents:
            raise Unreadable(f"{name} lies outside the checkpoint")  # tensorstore path refuses it with a code
        meta = _parse(name, _read_file(array_dir / ".zarray", 1 << 20))
        raw = math.prod(meta.chunks) * meta.dtype.itemsize
        limit = raw + raw // 128 + 4096  # zstd's bound on an incompressible chunk

        def get(key: str, array_dir: Path = array_dir, limit: int = limit) -> bytes:
            return _read_file(array_dir / key.replace("/", os.sep), limit)

        def open_chunk(key: str, array_dir: Path = array_dir, limit: int = limit) -> tuple[Callable[[int], bytes], int]:
            path = array_dir / key.replace("/", os.sep)
            size = _regular_size(path, limit)
            return file_range_reader(path, 0, size, str(path)), size

        arrays[name] = DirectArray(meta, get, open_chunk)
    return arrays


def _parse(name: str, text: bytes) -> ZarrMeta:
    try:
        return parse_zarray(text)
    except ForgedArray as exc:
        raise ForgedArray(f"{name}: {exc}") from exc


def _regular_size(path: Path, limit: int) -> int:
    """The size of a regular file, refused (``Unreadable``) when absent, special or larger than ``limit``."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise Unreadable(f"cannot read {path}: {exc}") from exc
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:  # a FIFO would block the open
        raise Unreadable(f"{path} is not a regular file of at most {limit:,} bytes")
    return info.st_size


def _read_file(path: Path, limit: int) -> bytes:
    """A regular file's bytes, refused (``Unreadable``) when absent, special or larger than ``limit``."""
    _regular_size(path, limit)
    try:
        with open(path, "rb") as handle:
            return handle.read(limit + 1)
    except OSError as exc:
        raise Unreadable(f"cannot read {path}: {exc}") from exc
