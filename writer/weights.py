"""Stream a graph's weights into shards, in slices, so memory is set by a buffer, not the model.

Each weight takes one of three routes (:func:`route`), all writing the same bytes:

* ``copy``: float32 little-endian values lying verbatim in the checkpoint file (Flax msgpack)
  and stored unquantized. They are checked for NaN/Inf through one reused buffer, then the
  kernel copies the byte range into the shards (:meth:`ShardWriter.copy_from`): the weights
  never pass through Python objects.
* ``stream``: a tensor the reader can hand out in slices and that needs no transpose is
  converted, checked, quantized and written slice by slice. uint8/uint16 quantization needs
  the tensor's min and max first, so those slices are read twice.
* ``whole``: everything else (transposed kernels, synthesised constants) is loaded whole,
  which bounds memory by the largest such tensor.

Reading and decoding run one step ahead in a second thread (:class:`_Prefetch`), so the next
Orbax tensor is decompressed while the current one is written; at most two slices (or
streamed tensors) are in memory, and a tensor loaded whole is loaded alone.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from topology.graph import WeightBinding
from topology.vocabulary.errors import ConversionError, Notices
from writer.quantize import QuantizeOptions, affine_blocks, quantize, quantized_meta, stored_itemsize
from writer.shards import ShardWriter
from writer.weight_dtypes import DtypePolicy

Progress = Callable[[str, int], None]  # (weight name, bytes written so far)

SLICE_BYTES = 8 << 20  # one streamed slice; a few are alive at once (reading, queued, writing)
SMALL_COPY_BYTES = 1 << 20  # "copy" tensors up to this size are read and written, not kernel-copied
_LE_FLOAT32 = np.dtype("<f4")


@dataclass
class WrittenWeights:
    """The manifest group and what was written.

    Example:
        >>> WrittenWeights({"paths": ["a.bin"], "weights": []}, 0, 0).files
        ['a.bin']
    """

    manifest_group: dict
    total_bytes: int
    quantized: int  # how many weights were quantized

    @property
    def files(self) -> list[str]:
        return list(self.manifest_group["paths"])


def write_weights(
    bindings: list[tuple[str, WeightBinding]],
    folder: Path,
    shard_bytes: int,
    quantization: QuantizeOptions,
    notices: Notices,
    allow_nonfinite: bool = False,
    progress: Progress | None = None,
    dtype_policy: DtypePolicy | None = None,
) -> WrittenWeights:
    """Write every weight in order into ``folder`` and return the manifest group.

    ``dtype_policy`` (the fit stage's, :class:`writer.weight_dtypes.DtypePolicy`) says what each
    stored dtype is written as; it is applied here, never decided (None: the rules alone).

    Example:
        >>> import tempfile
        >>> b = [("d/bias", WeightBinding("bias", (2,), constant=np.ones(2, "float32")))]
        >>> w = write_weights(b, Path(tempfile.mkdtemp()), 1024, QuantizeOptions(), Notices())
        >>> w.manifest_group["weights"][0]
        {'name': 'd/bias', 'shape': [2], 'dtype': 'float32'}
    """
    total = planned_bytes(bindings, quantization)
    specs = []
    shapes: dict[tuple[int, ...], list[int]] = {}  # one list per distinct shape: 100,000s of weights share few
    state = _State(notices, allow_nonfinite, dtype_policy or DtypePolicy())
    with state, ShardWriter(folder, total, shard_bytes) as shards, _Prefetch(_pieces(_plan(bindings, quantization))) as pieces:
        for name, binding, qdtype, kind in _plan(bindings, quantization):
            shape = shapes.get(binding.shape) or shapes.setdefault(binding.shape, list(binding.shape))
            spec = {"name": name, "shape": shape, "dtype": "float32"}
            if kind == "copy":
                _copy(binding, shards, state)
            elif kind == "stream":
                meta = _stream(binding, qdtype, pieces, shards, state)
                if meta is not None:
                    spec["quantization"] = meta
            else:
                values = state.to_float32(next(pieces), binding)
                if qdtype is not None:
                    values, spec["quantization"] = quantize(values, qdtype)
                shards.write(np.ascontiguousarray(values).data)
                del values
            specs.append(spec)
            if progress is not None:
                progress(name, shards.written)
    quantized = sum(1 for _, _, q, _ in _plan(bindings, quantization) if q is not None)
    return WrittenWeights({"paths": shards.names, "weights": specs}, total, quantized)


def _plan(bindings: list[tuple[str, WeightBinding]], quantization: QuantizeOptions) -> Iterator[tuple]:
    """(name, binding, quantized dtype or None, route) per weight, made as needed (no list per weight)."""
    for name, binding in bindings:
        qdtype = quantization.dtype if quantization.applies_to(name) else None
        yield name, binding, qdtype, route(binding, qdtype)


def planned_bytes(bindings: list[tuple[str, WeightBinding]], quantization: QuantizeOptions) -> int:
    """The bytes :func:`write_weights` will write for ``bindings`` (known before reading any weight).

    Example:
        >>> planned_bytes([("d/bias", WeightBinding("bias", (2,), constant=np.ones(2, "float32")))], QuantizeOptions("uint8"))
        2
    """
    return sum(math.prod(b.shape) * stored_itemsize(q) for _, b, q, _ in _plan(bindings, quantization))


def route(binding: WeightBinding, qdtype: str | None) -> str:
    """``copy``, ``stream`` or ``whole``: how the weight's values reach the shards (module docstring).

    Example:
        >>> route(WeightBinding("bias", (2,), constant=np.ones(2, "float32")), None)
        'whole'
    """
    ref = binding.tensor
    if ref is None or binding.transform is not None:
        return "whole"
    if qdtype is None and ref.extents is not None and np.dtype(ref.dtype) == _LE_FLOAT32:
        return "copy"
    return "stream" if ref.slices is not None else "whole"


def _pieces(plan) -> Iterator[np.ndarray]:
    """Everything the writer loop reads, in its order: runs in the prefetch thread."""
    for _, binding, qdtype, kind in plan:
        if kind == "whole":
            yield _Prefetch.DRAIN  # loaded whole: not while the writer still holds another tensor
            yield binding.materialize()
        elif kind == "stream":
            for _ in range(2 if qdtype in ("uint8", "uint16") else 1):  # min/max first, then the values
                yield from binding.tensor.slices(SLICE_BYTES)


class _State:
    """What the checks carry from weight to weight: the dtype policy and the dtypes reported, NaN/Inf
    policy, open source files."""

    def __init__(self, notices: Notices, allow_nonfinite: bool, dtype_policy: DtypePolicy) -> None:
        self.notices = notices
        self.allow_nonfinite = allow_nonfinite
        self.dtype_policy = dtype_policy
        self.converted: set[str] = set()
        # One descriptor per source file for the whole write: a model of 100,000 tiny tensors in one
        # msgpack file would otherwise open and close that file 100,000 times.
        self.fds: dict[str, int] = {}

    def fd(self, ref, file: str) -> int:
        if file not in self.fds:
            self.fds[file] = _open(ref, file)
        return self.fds[file]

    def __enter__(self) -> "_State":
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def to_float32(self, values: np.ndarray, binding: WeightBinding, count_only: bool = False) -> np.ndarray:
        stored = binding.tensor.stored_dtype if binding.tensor is not None else ""
        values = self.dtype_policy.apply(values, binding.origin, self.converted, self.notices, stored)
        if not count_only:
            self.refuse_nonfinite(binding, nonfinite(values), values.size)
        return values

    def refuse_nonfinite(self, binding: WeightBinding, bad: int, size: int) -> None:
        if bad and not self.allow_nonfinite:
            raise ConversionError(
                "NONFINITE_WEIGHT", f"{binding.origin} has {bad} NaN/Inf value(s) out of {size}",
                "the training diverged or the file is damaged; pass --allow-nonfinite to write them anyway",
            )


def nonfinite(values: np.ndarray, scratch: np.ndarray | None = None) -> int:
    """How many NaN/Inf values ``values`` holds (``scratch``: a reusable bool buffer of at least its size).

    Example:
        >>> nonfinite(np.array([1.0, np.nan, np.inf], np.float32))
        2
    """
    flat = values.reshape(-1)
    out = None if scratch is None else scratch[:flat.size]
    return int(flat.size - np.count_nonzero(np.isfinite(flat, out=out)))


def _copy(binding: WeightBinding, shards: ShardWriter, state: _State) -> None:
    """Kernel-copy the float32 bytes into the shards while a thread checks them for NaN/Inf.

    The check reads through one reused buffer on the second core (preadv and isfinite release
    the GIL); a bad value is reported when both are done, and the staged output is discarded.
    """
    ref = binding.tensor
    if ref.nbytes <= SMALL_COPY_BYTES:
        _copy_small(binding, shards, state)
        return
    counted: list = []
    checker = None
    if not state.allow_nonfinite:
        checker = threading.Thread(target=_count_nonfinite, args=(ref, counted), name="flax2tfjs-check", daemon=True)
        checker.start()
    try:
        _kernel_copy(ref, shards)
    finally:
        if checker is not None:
            checker.join()
    if checker is not None:
        if isinstance(counted[0], BaseException):
            raise counted[0]
        state.refuse_nonfinite(binding, counted[0], ref.size)


def _copy_small(binding: WeightBinding, shards: ShardWriter, state: _State) -> None:
    """A small tensor: one read into memory, checked and written in this thread.

    A thread and a kernel copy per tensor cost ~0.1 ms each, which for a model of 100,000 tiny
    tensors was most of the conversion time; below :data:`SMALL_COPY_BYTES` reading is cheaper.
    """
    ref = binding.tensor
    for file, offset, length in ref.extents:
        data = os.pread(state.fd(ref, file), length, offset)
        if len(data) != length:
            _changed(ref, file)
        if not state.allow_nonfinite:
            state.refuse_nonfinite(binding, nonfinite(np.frombuffer(data, _LE_FLOAT32)), ref.size)
        shards.write(data)


def _count_nonfinite(ref, result: list) -> None:
    """NaN/Inf count of ``ref``'s bytes read through one reused buffer, into ``result[0]``."""
    try:
        buffer = np.empty(SLICE_BYTES // 4, _LE_FLOAT32)
        finite = np.empty(SLICE_BYTES // 4, bool)
        view = memoryview(buffer.view(np.uint8))
        bad = 0
        for file, offset, length in ref.extents:
            fd = _open(ref, file)
            try:
                for start in range(0, length, SLICE_BYTES):
                    n = min(SLICE_BYTES, length - start)
                    if os.preadv(fd, [view[:n]], offset + start) != n:
                        _changed(ref, file)
                    bad += nonfinite(buffer[:n // 4], finite)
            finally:
                os.close(fd)
        result.append(bad)
    except BaseException as exc:  # raised by the writer thread
        result.append(exc)


def _kernel_copy(ref, shards: ShardWriter) -> None:
    for file, offset, length in ref.extents:
        fd = _open(ref, file)
        try:
            shards.copy_from(fd, offset, length)
        except EOFError:
            _changed(ref, file)
        finally:
            os.close(fd)


def _open(ref, file: str) -> int:
    try:
        return os.open(file, os.O_RDONLY)
    except OSError:
        _changed(ref, file)


def _changed(ref, file: str):
    raise ConversionError(
        "TRUNCATED_CHECKPOINT",
        f"{file} is truncated: `{'/'.join(ref.path)}` ends beyond the end of the file "
        "(the file changed after it was opened)",
        "the file is incomplete (an interrupted save, a partial copy or download); save or copy the checkpoint again",
    )


def _stream(binding: WeightBinding, qdtype: str | None, pieces: Iterator[np.ndarray], shards: ShardWriter,
            state: _State) -> dict | None:
    """Write one sliced tensor; returns the manifest's ``quantization`` entry (None if not quantized)."""
    total = binding.tensor.size
    if qdtype in ("uint8", "uint16"):
        low, high, bad, seen = np.inf, -np.inf, 0, 0
        while seen < total:
            part = state.to_float32(next(pieces), binding, count_only=True)
            bad += nonfinite(part)
            if part.size:
                low, high = min(low, float(part.min())), max(high, float(part.max()))
            seen += part.size
        state.refuse_nonfinite(binding, bad, total)
        low, high = (low, high) if total else (0.0, 0.0)
        meta, affine = quantized_meta(low, high, qdtype)
    else:
        meta, affine = (quantized_meta(0.0, 0.0, "float16")[0] if qdtype == "float16" else None), None
    bad, seen = 0, 0
    while seen < total:
        part = state.to_float32(next(pieces), binding, count_only=True)
        seen += part.size
        if qdtype is None or qdtype == "float16":
            bad += nonfinite(part)
        if qdtype == "float16":
            part = part.astype("<f2")
        elif qdtype is not None:
            part = affine(part)
        shards.write(np.ascontiguousarray(part).data)
    if qdtype is None or qdtype == "float16":
        state.refuse_nonfinite(binding, bad, total)
    return meta


class _Prefetch:
    """Run an iterator one item ahead in a daemon thread, errors included.

    tensorstore's decoding and file reads release the GIL, so the next tensor is decoded on
    the second core while this one is written. At most two items are alive: the one being
    written and the one made ahead. When the source yields :attr:`DRAIN`, the next item is
    made only once the writer has finished with every earlier one (for tensors loaded whole,
    so that memory stays one such tensor).

    Example:
        >>> with _Prefetch(iter([1, _Prefetch.DRAIN, 2])) as items:
        ...     next(items), next(items)
        (1, 2)
    """

    DRAIN = object()
    _DONE = object()

    def __init__(self, items: Iterator) -> None:
        self._items = items
        self._queue: queue.Queue = queue.Queue()  # never more than one entry: see _ahead
        self._ahead = threading.Semaphore(1)  # one item made and not yet taken
        self._state = threading.Condition()
        self._made = self._taken = 0
        self._waiting = False  # the writer is asking for the next item
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flax2tfjs-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        items = iter(self._items)
        try:
            while True:
                if not self._slot():  # before the next item is made: one ahead, not two
                    return
                item = next(items, self._DONE)
                if item is self.DRAIN:
                    self._ahead.release()
                    if not self._drained():
                        return
                    continue
                self._put((True, item))
                if item is self._DONE:
                    return
        except BaseException as exc:  # handed to the writer thread, raised there
            self._put((False, exc))

    def _slot(self) -> bool:
        while not self._ahead.acquire(timeout=0.1):
            if self._stop.is_set():
                return False
        return True

    def _put(self, entry: tuple) -> None:
        with self._state:
            self._made += 1
        self._queue.put(entry)

    def _drained(self) -> bool:
        with self._state:
            while not (self._waiting and self._taken == self._made):
                if self._stop.is_set():
                    return False
                self._state.wait(timeout=0.1)
        return True

    def __iter__(self) -> "_Prefetch":
        return self

    def __next__(self):
        with self._state:
            self._waiting = True
            self._state.notify_all()
        ok, item = self._queue.get()
        with self._state:
            self._waiting = False
            self._taken += 1
        self._ahead.release()
        if not ok:
            raise item
        if item is self._DONE:
            raise StopIteration
        return item

    def __enter__(self) -> "_Prefetch":
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def to_float32(values: np.ndarray, origin: str, converted: set[str], notices: Notices, allow_nonfinite: bool,
               dtype_policy: DtypePolicy | None = None) -> np.ndarray:
    """Little-endian float32 values, refusing NaN/Inf unless allowed.

    Other dtypes are written as ``dtype_policy`` says (the fit stage's; None: the rules of
    :mod:`writer.weight_dtypes` alone: floats cast, int64 range-checked, integers and bools converted
    only when exact), each source dtype reported once as ``fixed[DTYPE_CONVERTED]``.

    Example:
        >>> to_float32(np.ones(2, np.float64), "params/d/bias", set(), Notices(), False).dtype
        dtype('float32')
    """
    values = (dtype_policy or DtypePolicy()).apply(values, origin, converted, notices)
    if not allow_nonfinite:
        bad = nonfinite(values)
        if bad:
            raise ConversionError(
                "NONFINITE_WEIGHT", f"{origin} has {bad} NaN/Inf value(s) out of {values.size}",
                "the training diverged or the file is damaged; pass --allow-nonfinite to write them anyway",
            )
    return values
