"""Stream a graph's weights into shards, in slices, so memory is set by a buffer, not the model.

Each weight takes one of three routes (:func:`route`), all writing the same bytes:

* ``copy``: float32 little-endian values lying verbatim in the checkpoint file (Flax msgpack)
  and stored unquantized. They are read chunk by chunk into a reused cache-sized buffer,
  checked for NaN/Inf there and written from there, by two threads for a large tensor
  (:func:`_copy`): one read of the source, and the weights never pass through Python objects.
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

import itertools
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
SMALL_COPY_BYTES = 1 << 20  # "copy" tensors up to this size are read and written whole, in this thread
COPY_CHUNK_BYTES = 1 << 20  # one read-check-write step of a larger one: fits the CPU's L2 cache
PARALLEL_COPY_BYTES = 4 << 20  # "copy" tensors from this size are shared by two threads
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
        self._copy_buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def copy_buffer(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """A float32 buffer of :data:`COPY_CHUNK_BYTES` and its bool scratch, one pair per copying thread."""
        if slot not in self._copy_buffers:
            count = COPY_CHUNK_BYTES // 4
            self._copy_buffers[slot] = (np.empty(count, _LE_FLOAT32), np.empty(count, bool))
        return self._copy_buffers[slot]

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
    """Copy the float32 bytes into the shards in one pass, checking them for NaN/Inf on the way.

    Each chunk of :data:`COPY_CHUNK_BYTES` is read into a buffer that stays in the CPU cache,
    checked there and written from there: one read of the source, where a kernel copy
    (``copy_file_range``, which on ext4 copies pages in the kernel as well) needed a second
    read for the check. A tensor of at least :data:`PARALLEL_COPY_BYTES` is copied by two
    threads (preadv, isfinite and pwrite release the GIL) taking chunks from one counter, so
    a thread that gets no core leaves its share to the other. A bad value is reported when
    all chunks are written; the staged output is then discarded.
    """
    ref = binding.tensor
    if ref.nbytes <= SMALL_COPY_BYTES:
        _copy_small(binding, shards, state)
        return
    jobs = _chunks(ref, shards.reserve(ref.nbytes), state)
    taken = itertools.count()  # next(): atomic in CPython, so each chunk goes to one thread
    results: list = []
    helper = None
    if ref.nbytes >= PARALLEL_COPY_BYTES:
        helper = threading.Thread(target=_copy_chunks, args=(ref, jobs, taken, shards, state, 1, results),
                                  name="flax2tfjs-copy", daemon=True)
        helper.start()
    try:
        _copy_chunks(ref, jobs, taken, shards, state, 0, results)
    finally:
        if helper is not None:
            helper.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    if not state.allow_nonfinite:
        state.refuse_nonfinite(binding, sum(results), ref.size)


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


def _chunks(ref, position: int, state: _State) -> list[tuple[int, str, int, int, int]]:
    """(source fd, file, offset, stream position, length) of every chunk of ``ref``, in order."""
    jobs = []
    for file, offset, length in ref.extents:
        fd = state.fd(ref, file)
        for start in range(0, length, COPY_CHUNK_BYTES):
            n = min(COPY_CHUNK_BYTES, length - start)
            jobs.append((fd, file, offset + start, position + start, n))
        position += length
    return jobs


def _copy_chunks(ref, jobs: list, taken: Iterator[int], shards: ShardWriter, state: _State, slot: int,
                 results: list) -> None:
    """Read, check and write chunks until none is left; appends the NaN/Inf count (or the error) to ``results``."""
    try:
        buffer, finite = state.copy_buffer(slot)
        view = memoryview(buffer.view(np.uint8))
        bad = 0
        for i in taken:
            if i >= len(jobs) or any(isinstance(r, BaseException) for r in results):
                break
            fd, file, offset, position, n = jobs[i]
            if os.preadv(fd, [view[:n]], offset) != n:
                _changed(ref, file)
            if not state.allow_nonfinite:
                bad += nonfinite(buffer[:n // 4], finite)
            shards.write_at(position, view[:n])
        results.append(bad)
    except BaseException as exc:  # raised by the calling thread
        results.append(exc)


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
