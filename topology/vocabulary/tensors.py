"""Lazy tensors: what a reader hands on, so that at most one tensor is in memory.

A reader never returns arrays; it returns :class:`TensorRef` objects that know a
tensor's path, shape and dtype and how to load its bytes when the writer gets to
it. The writer loads, converts, writes and drops each tensor in turn.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

TreePath = tuple[str, ...]
# Yields the tensor's values flat, in C order, as consecutive pieces of at most ``max_bytes`` each.
SliceReader = Callable[[int], Iterator[np.ndarray]]


def path_str(path: TreePath) -> str:
    """Render a tree path the way users see it in messages.

    Example:
        >>> path_str(("params", "Dense_0", "kernel"))
        'params/Dense_0/kernel'
    """
    return "/".join(path)


@dataclass(frozen=True, slots=True)  # slots: a model may hold 100,000s of them (memory per tensor)
class TensorRef:
    """A tensor in a checkpoint, not yet read.

    Example:
        >>> ref = TensorRef(("w",), (2,), np.dtype("float32"), lambda: np.zeros(2, "float32"), "x.npz")
        >>> ref.load().shape, ref.nbytes
        ((2,), 8)
    """

    path: TreePath
    shape: tuple[int, ...]
    dtype: np.dtype
    loader: Callable[[], np.ndarray] = field(repr=False, compare=False)
    source: str = ""  # the file it comes from, for messages
    # The dtype name in the file when the reader widens it on load (bfloat16 is read as float32).
    stored_dtype: str = ""
    # Optional streaming access, so the writer never holds a large tensor whole (see writer.weights):
    # ``slices(max_bytes)`` yields the loaded values flat in pieces; ``extents`` says where exactly
    # the loaded bytes lie verbatim in a file, as (file, byte offset, byte length) in element order.
    slices: SliceReader | None = field(default=None, repr=False, compare=False)
    extents: tuple[tuple[str, int, int], ...] | None = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes in the checkpoint (a bfloat16 tensor counts 2 per value though it loads as float32)."""
        return self.size * (2 if self.stored_dtype == "bfloat16" else self.dtype.itemsize)

    @property
    def dtype_name(self) -> str:
        """The dtype as stored in the checkpoint (``bfloat16`` even though it loads as float32)."""
        return self.stored_dtype or self.dtype.name

    def load(self) -> np.ndarray:
        array = self.loader()
        if tuple(array.shape) != tuple(self.shape):
            array = array.reshape(self.shape)
        return array

    def with_path(self, path: TreePath) -> "TensorRef":
        return dataclasses.replace(self, path=path)


@dataclass
class Checkpoint:
    """Everything a reader found: lazy tensors and small non-array leaves, by path.

    ``tensors`` keeps the order the checkpoint stores them in (Flax writes
    parameters in module call order, which topology inference may rely on).

    Example:
        >>> ck = Checkpoint("npz", Path("m.npz"), {}, {("step",): 3})
        >>> ck.scalars[("step",)]
        3
    """

    format: str  # "flax-msgpack" | "orbax" | "npz"
    path: Path  # the file or folder actually read (after resolving steps)
    tensors: dict[TreePath, TensorRef]
    scalars: dict[TreePath, Any] = field(default_factory=dict)
    step: int | None = None
    closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for close in self.closers:
            close()
        self.closers.clear()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
