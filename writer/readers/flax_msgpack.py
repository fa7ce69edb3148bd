"""Read Flax msgpack checkpoints (``flax.serialization.to_bytes``) header by header.

A Flax msgpack file is one msgpack map of string keys. Array leaves are ext
type 1 (or 3 for numpy scalars) whose payload is itself msgpack:
``(shape, dtype_name, raw_bytes)``. Arrays above 1 GiB are split into
``{'__msgpack_chunked_array__': True, 'shape': {...}, 'chunks': {...}}``.

Unpacking such a file with ``msgpack.unpackb`` needs the whole file (and every
array) in memory. This reader instead walks the msgpack headers
(:mod:`writer.readers.msgpack_walker`), notes where each array's raw bytes
start, and skips them; each :class:`~topology.vocabulary.tensors.TensorRef`
later reads exactly its own bytes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from topology.vocabulary.errors import ConversionError
from topology.vocabulary.tensors import Checkpoint, TensorRef, TreePath, path_str
from writer.readers.msgpack_walker import (  # noqa: F401  (MAX_DEPTH: the reader's limits, re-exported)
    FLOAT32, MAX_DEPTH, TRUNCATED_HINT, ArrayLeaf, MsgpackWalker, widen_bfloat16,
)

def read_flax_msgpack(path: Path) -> Checkpoint:
    """List the tensors of a Flax msgpack file without loading them.

    Paths are tuples of keys from the root; list elements and integer keys
    become ``'0'``, ``'1'``, ... Non-array leaves (``step`` ints, numpy
    scalars as Python numbers, strings, ``None``) go to ``Checkpoint.scalars``.
    Tensors keep the order of the file (Flax's module call order).

    Example:
        >>> import flax, numpy as np, tempfile, os                       # doctest: +SKIP
        >>> f = Path(tempfile.mkdtemp()) / "m.msgpack"                   # doctest: +SKIP
        >>> f.write_bytes(flax.serialization.to_bytes(
        ...     {"params": {"Dense_0": {"bias": np.zeros(3, "float32")}}, "step": 7}))  # doctest: +SKIP
        >>> ck = read_flax_msgpack(f)                                    # doctest: +SKIP
        >>> list(ck.tensors), ck.scalars                                 # doctest: +SKIP
        ([('params', 'Dense_0', 'bias')], {('step',): 7})
    """
    path = Path(path)
    try:
        with open(path, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            walker = MsgpackWalker(handle, size, path)
            records = walker.walk()
    except OSError as exc:
        raise _unreadable(path, exc) from exc

    tensors: dict[TreePath, TensorRef] = {}
    scalars: dict[TreePath, Any] = {}
    source = str(path)  # one string shared by every tensor's extents (memory per tensor, see bounds.py)
    for record in records:
        if isinstance(record, ArrayLeaf):
            located = tuple((source, o, n) for o, n in record.pieces)
            reader = _ArrayReader(path, record.path, record.shape, record.dtype, located, record.stored)
            tensors[record.path] = TensorRef(
                record.path, record.shape, FLOAT32 if record.stored else record.dtype,
                reader.load, source, record.stored, slices=reader.slices,
                extents=located if not record.stored else None,
            )
        else:
            scalars[record.path] = record.value
    del records
    if not tensors:
        found = ", ".join(path_str(p) for p in list(scalars)[:5]) or "nothing"
        if walker.nils:
            found += f"; {walker.nils:,} nils in lists"
        raise ConversionError(
            "EMPTY_CHECKPOINT",
            f"{path} is a Flax msgpack file but holds no arrays (found: {found})",
            "save the model variables, e.g. flax.serialization.to_bytes({'params': params})",
        )
    return Checkpoint("flax-msgpack", path, tensors, scalars)


class _ArrayReader:
    """Reads one array leaf's bytes: whole (:meth:`load`) or flat in slices (:meth:`slices`).

    A slotted object rather than two closures: a model of 100,000 tiny tensors keeps one per tensor.
    """

    __slots__ = ("file", "path", "shape", "dtype", "extents", "stored")

    def __init__(self, file: Path, path: TreePath, shape: tuple[int, ...], dtype: np.dtype,
                 extents: tuple[tuple[str, int, int], ...], stored: str) -> None:
        self.file, self.path, self.shape, self.dtype, self.extents, self.stored = file, path, shape, dtype, extents, stored

    def load(self) -> np.ndarray:
        array, file = self, self.file
        out = np.empty(array.shape, array.dtype)
        if out.nbytes == 0:
            return widen_bfloat16(out) if array.stored else out
        target = memoryview(out.reshape(-1).view(np.uint8))
        try:
            with open(file, "rb", buffering=0) as handle:
                filled = 0
                for _, offset, nbytes in array.extents:
                    _read_exact(handle, target[filled:filled + nbytes], offset, file, array.path)
                    filled += nbytes
        except OSError as exc:
            raise _unreadable(file, exc) from exc
        return widen_bfloat16(out) if array.stored else out

    def slices(self, max_bytes: int) -> Iterator[np.ndarray]:
        """The tensor flat, ``max_bytes`` of loaded values at a time (a fresh array each)."""
        array, file = self, self.file
        dtype = array.dtype
        widen = 2 if array.stored else 1  # bfloat16 doubles in size when widened
        step = max(dtype.itemsize, max_bytes // widen // dtype.itemsize * dtype.itemsize)
        try:
            with open(file, "rb", buffering=0) as handle:
                for _, offset, nbytes in array.extents:
                    for start in range(0, nbytes, step):
                        part = np.empty(min(step, nbytes - start) // dtype.itemsize, dtype)
                        _read_exact(handle, memoryview(part.view(np.uint8)), offset + start, file, array.path)
                        yield widen_bfloat16(part) if array.stored else part
        except OSError as exc:
            raise _unreadable(file, exc) from exc


def _read_exact(handle: Any, target: memoryview, offset: int, file: Path, tree_path: TreePath) -> None:
    handle.seek(offset)
    got = _read_into(handle, target)
    if got < len(target):
        raise ConversionError(
            "TRUNCATED_CHECKPOINT",
            f"{file} is truncated: reading `{path_str(tree_path)}` at byte offset {offset + got:,} "
            f"needs {len(target) - got:,} more bytes (the file changed after it was opened)",
            TRUNCATED_HINT,
        )


def _read_into(handle: Any, target: memoryview) -> int:
    # One read() may return less than asked (e.g. above 2 GiB on Linux): loop.
    got = 0
    while got < len(target):
        n = handle.readinto(target[got:])
        if not n:
            break
        got += n
    return got


def _unreadable(path: Path, exc: OSError) -> ConversionError:
    return ConversionError(
        "CHECKPOINT_UNREADABLE",
        f"cannot read {path}: {exc.strerror or exc}",
        "check that the file exists and that you may read it",
    )
