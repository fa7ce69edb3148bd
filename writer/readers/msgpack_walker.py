"""The bounded walker of Flax msgpack files: headers only, every length checked, data skipped.

A Flax msgpack file is one msgpack map of string keys. Array leaves are ext
type 1 (or 3 for numpy scalars) whose payload is itself msgpack:
``(shape, dtype_name, raw_bytes)``. Arrays above 1 GiB are split into
``{'__msgpack_chunked_array__': True, 'shape': {...}, 'chunks': {...}}``.

:class:`MsgpackWalker` reads the headers with seek/read and notes where each
array's raw bytes start (:class:`ArrayLeaf`); other leaves become
:class:`ValueLeaf`. Every length in a header is checked against the bytes left
in the file before anything is allocated, and depth, value count and path
length are bounded, so a damaged or hostile file fails fast with a
:class:`~topology.vocabulary.errors.ConversionError`.

Example:
    >>> import io
    >>> data = bytes([0x81, 0xA4]) + b"step" + bytes([0x07])    # {"step": 7}
    >>> MsgpackWalker(io.BytesIO(data), len(data), Path("m.msgpack")).walk()
    [ValueLeaf(path=('step',), value=7)]
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from topology.vocabulary.errors import ConversionError
from topology.vocabulary.tensors import TreePath, path_str
from writer.readers.msgpack_dtypes import BF16_BITS, BFLOAT16, FLOAT32, dtype_of, widen_bfloat16  # noqa: F401
from writer.readers.msgpack_fast import array_header, fixstr

MAX_DEPTH = 512  # a Flax tree is a few levels deep; deeper means damage or an attack
MAX_VALUES = 10_000_000
# Leaves kept in memory (nils in lists are counted, not kept). Each costs ~1 KB through the whole
# conversion while the file may spend 20 bytes on it: these caps keep a 10 MB file under 300 MB.
MAX_ARRAYS = 120 << 10  # 122,880 arrays: a 61,440-layer MLP (measured 287 MiB); real models hold thousands
MAX_OTHER_LEAVES = 1 << 16  # step counters, hyperparameters, strings
PATH_CELLS_PER_BYTE = 8  # a real Flax tree is a few levels deep and every leaf takes a byte or more  # bounds memory and time of the walk; real checkpoints hold far fewer
MAX_KEY_BYTES = 1 << 16
MAX_DTYPE_NAME = 64
MAX_NDIM = 64  # numpy's own limit
MAX_SCALAR_BYTES = 16 << 20  # strings and bytes leaves are kept in memory, arrays are not
CHUNK_MARKER = "__msgpack_chunked_array__"

_EXT_NDARRAY, _EXT_COMPLEX, _EXT_NPSCALAR = 1, 2, 3
_READ_AHEAD = 1 << 16  # headers are tiny: read them in blocks, never the tensor data

# Header kinds returned by MsgpackWalker._header.
_VALUE, _MAP, _ARRAY, _STR, _BIN, _EXT = range(6)
_KIND_NAMES = {_VALUE: "value", _MAP: "map", _ARRAY: "list", _STR: "string", _BIN: "bytes", _EXT: "ext"}

TRUNCATED_HINT = (
    "the file is incomplete (an interrupted save, a partial copy or download); "
    "save or copy the checkpoint again"
)
_CORRUPT_HINT = (
    "the file is damaged or was not written by flax.serialization.to_bytes; "
    "save the checkpoint again with flax.serialization.to_bytes(state)"
)


@dataclass(slots=True)
class ArrayLeaf:
    """An array leaf: where its raw bytes are. ``pieces`` has several entries if chunked."""

    path: TreePath
    shape: tuple[int, ...]
    dtype: np.dtype  # of the raw bytes; bfloat16 is kept as its uint16 bit patterns
    pieces: list[tuple[int, int]]  # (byte offset, byte length), in element order
    stored: str = ""  # "bfloat16" when ``dtype`` holds bit patterns to widen on load


@dataclass(slots=True)
class ValueLeaf:
    """Any other leaf (a step number, a numpy scalar, a string, None): its value, kept in memory."""

    path: TreePath
    value: Any


class _Frame:
    """An open map or list on the walker's stack."""

    __slots__ = ("kind", "path", "left", "index", "start", "keys", "chunked")

    def __init__(self, kind: int, path: TreePath, count: int, start: int) -> None:
        self.kind = kind
        self.path = path
        self.left = count
        self.index = 0
        self.start = start  # index of this container's first record
        self.keys: set[str] | None = set() if kind == _MAP else None
        self.chunked = False


class MsgpackWalker:
    """Walks the msgpack structure of one file, reading headers and skipping raw data.

    Iterative (an explicit stack), so nesting depth never hits Python's
    recursion limit; every loop step consumes at least one byte of the file.
    """

    def __init__(self, handle: Any, size: int, file: Path) -> None:
        self.handle = handle
        self.size = size
        self.file = file
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.pos = 0
        self.limit = size  # end of the region being parsed (an ext payload, or the file)
        self.where: TreePath = ()
        self.in_key = False
        self.value_start = 0
        self.count = 0
        self.records: list[ArrayLeaf | ValueLeaf] = []
        self.nils = 0  # nils skipped in lists (see _skip_nils)
        self.arrays = 0
        self.other_leaves = 0
        # Each distinct key and shape is held once, however many leaves share it: memory follows
        # the distinct names present, not the leaf count.
        self.names: dict[str, str] = {}
        self.raw_names: dict[bytes, str] = {}
        self.shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
        # Path elements held by the records: each record keeps its full path, so a deep tree of many
        # tiny leaves would cost depth x leaves; bounded by the file size instead.
        self.path_cells = 0
        self.max_path_cells = PATH_CELLS_PER_BYTE * size + (1 << 20)

    # -- walking the tree -------------------------------------------------

    def walk(self) -> list[ArrayLeaf | ValueLeaf]:
        kind, count = self._header()
        if kind != _MAP:
            raise ConversionError(
                "NOT_A_CHECKPOINT",
                f"{self.file} starts with a msgpack {_KIND_NAMES[kind]}, not a map; "
                "a Flax checkpoint is a map of variable names",
                "save a dict of variables: flax.serialization.to_bytes({'params': params})",
            )
        stack = [self._open(_MAP, (), count)]
        while stack:
            frame = stack[-1]
            if frame.kind == _ARRAY and frame.left and self._skip_nils(frame):
                continue
            if frame.left == 0:
                stack.pop()
                if frame.chunked:
                    self._collapse_chunked(frame)
                continue
            frame.left -= 1
            if frame.kind == _MAP:
                key = self._key(frame)
            else:
                key = str(frame.index)
                key = self.names.setdefault(key, key)
                frame.index += 1
            path = frame.path + (key,)
            self.where, self.in_key = path, False
            self.count += 1
            if self.count > MAX_VALUES:
                self._corrupt(
                    f"the tree holds more than {MAX_VALUES:,} values; flax2tfjs stops there "
                    "to bound memory and time"
                )
            kind, arg = self._header()
            if kind == _MAP or kind == _ARRAY:
                if len(stack) >= MAX_DEPTH:
                    self._corrupt(f"maps and lists are nested more than {MAX_DEPTH} levels deep")
                stack.append(self._open(kind, path, arg))
            elif kind == _EXT:
                self._ext(path, *arg)
            elif kind == _STR:
                self._add_leaf(path, self._text(arg, MAX_SCALAR_BYTES))
            elif kind == _BIN:
                self._add_leaf(path, self._blob(arg))
            elif arg is None and frame.kind == _ARRAY:
                self.nils += 1  # as _skip_nils: a nil in a list is counted, not kept
            else:
                self._add_leaf(path, arg)
            if key == CHUNK_MARKER and frame.kind == _MAP:
                frame.chunked = True
        if self.pos != self.size:
            self.where, self.value_start = (), self.pos
            self._corrupt(f"{self.size - self.pos} bytes follow the end of the top-level map")
        return self.records

    def _open(self, kind: int, path: TreePath, count: int) -> _Frame:
        # Each entry takes at least one byte (two for a map): a count beyond the
        # bytes left is a truncated or forged header; say so before looping.
        needed = count * (2 if kind == _MAP else 1)
        if self.pos + needed > self.size:
            self._truncated(needed, what=f"a {_KIND_NAMES[kind]} of {count} entries")
        return _Frame(kind, path, count, len(self.records))

    def _key(self, frame: _Frame) -> str:
        self.where, self.in_key = frame.path, True
        raw = fixstr(self.buf, self.pos - self.base) if self.pos >= self.base else None
        if raw is not None and self.pos + 1 + len(raw) <= self.limit:
            self.value_start = self.pos
            self.pos += 1 + len(raw)
            key = self.raw_names.get(raw)
            if key is None:
                key = self.raw_names[raw] = self._decode(raw)
            return self._unique(frame, key)
        kind, arg = self._header()
        if kind == _STR:
            key = self._text(arg, MAX_KEY_BYTES)
        elif kind == _BIN:
            if arg > MAX_KEY_BYTES:
                self._corrupt(f"a map key of {arg} bytes")
            key = self._decode(self._take(arg))
        elif kind == _VALUE and isinstance(arg, int) and not isinstance(arg, bool):
            key = str(arg)  # msgpack_restore allows int keys; paths are strings
        else:
            shown = _KIND_NAMES[kind] if kind != _VALUE else type(arg).__name__
            self._corrupt(f"a map key of type {shown}; Flax writes string keys")
        return self._unique(frame, key)

    def _unique(self, frame: _Frame, key: str) -> str:
        key = self.names.setdefault(key, key)  # "kernel" once, not once per layer
        assert frame.keys is not None
        if key in frame.keys:
            self._corrupt(f"the key {key!r} appears twice in the same map")
        frame.keys.add(key)
        return key

    def _skip_nils(self, frame: _Frame) -> bool:
        """Step over the run of nils at the read position of a list: counted, never made into objects.

        A nil in a list carries no weight (Flax writes None leaves as nils); a 9 MB file can hold
        9 million of them, which as leaf records took 2.7 GB. Reads only what is buffered.
        """
        off = self.pos - self.base
        if not 0 <= off < len(self.buf) or self.buf[off] != 0xC0:
            return False
        segment = self.buf[off:min(off + frame.left, self.limit - self.base)]
        run = len(segment) - len(segment.lstrip(b"\xc0"))
        if run <= 0:
            return False
        self.count += run
        if self.count > MAX_VALUES:
            self.value_start = self.pos
            self._corrupt(f"the tree holds more than {MAX_VALUES:,} values; flax2tfjs stops there to bound memory and time")
        self.pos += run
        frame.left -= run
        frame.index += run
        self.nils += run
        return True

    def _add_leaf(self, path: TreePath, value: Any) -> None:
        self._count_path(path)
        self.other_leaves += 1
        if self.other_leaves > MAX_OTHER_LEAVES:
            self._too_many(f"{MAX_OTHER_LEAVES:,} non-array leaves")
        self.records.append(ValueLeaf(path, value))

    def _add_array(self, leaf: ArrayLeaf) -> None:
        self._count_path(leaf.path)
        self.arrays += 1
        if self.arrays > MAX_ARRAYS:
            self._too_many(f"{MAX_ARRAYS:,} arrays")
        self.records.append(leaf)

    def _too_many(self, what: str) -> NoReturn:
        raise ConversionError(
            "TOO_MANY_LEAVES",
            f"{self.file} holds more than {what} (at `{self._where_text()}`, byte offset {self.value_start:,}); "
            "flax2tfjs stops there to keep memory and time bounded by the file's size",
            "a real model holds far fewer; check that this is the checkpoint you meant (leaves of a whole "
            "dataset or optimizer history do not belong in it), or save only the parameters",
        )

    def _count_path(self, path: TreePath) -> None:
        self.path_cells += len(path)
        if self.path_cells > self.max_path_cells:
            self._corrupt(
                f"the tree's leaves sit so deep that their paths would take more than {self.max_path_cells:,} "
                "entries; flax2tfjs stops there to keep memory proportional to the file"
            )

    # -- ext types: arrays, numpy scalars, complex numbers ------------------

    def _ext(self, path: TreePath, code: int, length: int) -> None:
        end = self.pos + length
        if end > self.limit:
            self._overrun(length)
        outer_limit, self.limit = self.limit, end
        try:
            if code == _EXT_NDARRAY and self._fast_ndarray(path, end):
                return
            if code == _EXT_NDARRAY or code == _EXT_NPSCALAR:
                shape, dtype, offset, nbytes, stored = self._ndarray_payload()
                if code == _EXT_NPSCALAR and shape == ():
                    raw = np.frombuffer(self._take(nbytes), dtype)
                    self._add_leaf(path, (widen_bfloat16(raw) if stored else raw)[()].item())
                else:
                    self._skip(nbytes)  # the tensor data: never read during the walk
                    self._add_array(ArrayLeaf(path, shape, dtype, [(offset, nbytes)], stored))
            elif code == _EXT_COMPLEX:
                self._add_leaf(path, self._complex_payload())
            else:
                self._corrupt(
                    f"unknown msgpack ext type {code}; Flax writes 1 (array), 2 (complex) "
                    "and 3 (numpy scalar)"
                )
            if self.pos != end:
                self._corrupt(f"the ext payload has {end - self.pos} unexplained bytes at its end")
        finally:
            self.limit = outer_limit

    def _fast_ndarray(self, path: TreePath, end: int) -> bool:
        """An array leaf in the common encoding, parsed from the buffer (:mod:`msgpack_fast`); False if not."""
        if self.pos < self.base:
            return False
        parsed = array_header(self.buf, self.pos - self.base, end - self.base)
        if parsed is None or len(parsed[0]) > MAX_NDIM:
            return False
        dims, raw_name, data_at, nbytes = parsed
        name = raw_name.decode("ascii", errors="replace")
        dtype = dtype_of(name)
        if dtype is None or math.prod(dims) * dtype.itemsize != nbytes:
            return False  # the careful path reports it
        stored = BFLOAT16 if name == BFLOAT16 else ""
        shape = self.shapes.setdefault(dims, dims)
        self._add_array(ArrayLeaf(path, shape, dtype, [(self.base + data_at, nbytes)], stored))
        self.pos = end
        return True

    def _ndarray_payload(self) -> tuple[tuple[int, ...], np.dtype, int, int, str]:
        kind, count = self._header()
        if kind != _ARRAY or count != 3:
            self._corrupt("an array leaf must hold (shape, dtype name, data)")
        kind, ndim = self._header()
        if kind != _ARRAY:
            self._corrupt(f"an array leaf's shape is a {_KIND_NAMES[kind]}, not a list")
        if ndim > MAX_NDIM:
            self._corrupt(f"an array leaf claims {ndim} dimensions (numpy allows {MAX_NDIM})")
        dims = []
        for _ in range(ndim):
            kind, dim = self._header()
            if kind != _VALUE or type(dim) is not int or dim < 0:
                self._corrupt(f"an array dimension is {dim!r}, not a non-negative integer")
            dims.append(dim)
        shape = tuple(dims)
        shape = self.shapes.setdefault(shape, shape)
        kind, length = self._header()
        if kind not in (_STR, _BIN) or length > MAX_DTYPE_NAME:
            self._corrupt("an array leaf's dtype name is missing or too long")
        name = self._take(length).decode("ascii", errors="replace")
        dtype = dtype_of(name)
        stored = ""
        if name == BFLOAT16:
            dtype, stored = BF16_BITS, BFLOAT16
        if dtype is None:
            self._corrupt(
                f"unknown dtype name {name!r} (numpy and ml_dtypes names such as "
                "'float32' or 'bfloat16' are supported)"
            )
        kind, nbytes = self._header()
        if kind not in (_BIN, _STR):
            self._corrupt(f"an array leaf's data is a {_KIND_NAMES[kind]}, not bytes")
        expected = math.prod(shape) * dtype.itemsize
        if expected != nbytes:
            self._corrupt(
                f"shape {shape} of {dtype.name} needs {expected} bytes but the data holds {nbytes}"
            )
        return shape, dtype, self.pos, nbytes, stored

    def _complex_payload(self) -> complex:
        kind, count = self._header()
        if kind != _ARRAY or count != 2:
            self._corrupt("a complex number must be a (real, imag) pair")
        parts = []
        for _ in range(2):
            kind, value = self._header()
            if kind != _VALUE or not isinstance(value, (int, float)) or isinstance(value, bool):
                self._corrupt("a complex number's parts must be numbers")
            parts.append(value)
        return complex(parts[0], parts[1])

    # -- chunked arrays (> MAX_CHUNK_SIZE) ------------------------------------

    def _collapse_chunked(self, frame: _Frame) -> None:
        """Replace the records of a ``__msgpack_chunked_array__`` map by one array."""
        self.where, self.value_start = frame.path, self.pos
        base = len(frame.path)
        if frame.keys != {CHUNK_MARKER, "shape", "chunks"}:
            self._corrupt(
                f"a chunked array has keys {sorted(frame.keys or ())}; expected "
                f"{CHUNK_MARKER}, shape and chunks"
            )
        marker = None
        dims: dict[str, int] = {}
        chunks: dict[str, ArrayLeaf] = {}
        for record in self.records[frame.start:]:
            rel = record.path[base:]
            if rel == (CHUNK_MARKER,) and isinstance(record, ValueLeaf):
                marker = record.value
            elif (
                len(rel) == 2 and rel[0] == "shape" and isinstance(record, ValueLeaf)
                and type(record.value) is int and record.value >= 0
            ):
                dims[rel[1]] = record.value
            elif len(rel) == 2 and rel[0] == "chunks" and isinstance(record, ArrayLeaf) and len(record.shape) == 1:
                chunks[rel[1]] = record
            else:
                self._corrupt(f"unexpected entry {path_str(rel)!r} in a chunked array")
        if marker is not True:
            self._corrupt(f"{CHUNK_MARKER} is {marker!r}, not True")
        shape = tuple(_in_order(dims, self, "shape"))
        pieces = _in_order(chunks, self, "chunks")
        if not pieces:
            self._corrupt("a chunked array has no chunks")
        dtype, stored = pieces[0].dtype, pieces[0].stored
        if any(piece.dtype != dtype or piece.stored != stored for piece in pieces):
            self._corrupt("the chunks of a chunked array have different dtypes")
        total = sum(piece.shape[0] for piece in pieces)
        if total != math.prod(shape):
            self._corrupt(f"chunks hold {total} elements but the shape {shape} needs {math.prod(shape)}")
        offsets = [pair for piece in pieces for pair in piece.pieces]
        del self.records[frame.start:]
        self.records.append(ArrayLeaf(frame.path, shape, dtype, offsets, stored))

    # -- msgpack primitives ---------------------------------------------------

    def _header(self) -> tuple[int, Any]:
        """Read one msgpack type header: (kind, count/length/value); no payload is read."""
        self.value_start = self.pos
        b = self._byte()
        if b < 0x80:
            return _VALUE, b
        if b >= 0xE0:
            return _VALUE, b - 0x100
        if b < 0x90:
            return _MAP, b & 0x0F
        if b < 0xA0:
            return _ARRAY, b & 0x0F
        if b < 0xC0:
            return _STR, b & 0x1F
        if b == 0xC0:
            return _VALUE, None
        if b == 0xC2:
            return _VALUE, False
        if b == 0xC3:
            return _VALUE, True
        if 0xC4 <= b <= 0xC6:
            return _BIN, self._uint(1 << (b - 0xC4))
        if 0xC7 <= b <= 0xC9:
            length = self._uint(1 << (b - 0xC7))
            return _EXT, (self._sint(1), length)
        if b == 0xCA:
            return _VALUE, struct.unpack(">f", self._take(4))[0]
        if b == 0xCB:
            return _VALUE, struct.unpack(">d", self._take(8))[0]
        if 0xCC <= b <= 0xCF:
            return _VALUE, self._uint(1 << (b - 0xCC))
        if 0xD0 <= b <= 0xD3:
            return _VALUE, self._sint(1 << (b - 0xD0))
        if 0xD4 <= b <= 0xD8:
            return _EXT, (self._sint(1), 1 << (b - 0xD4))
        if 0xD9 <= b <= 0xDB:
            return _STR, self._uint(1 << (b - 0xD9))
        if b == 0xDC or b == 0xDD:
            return _ARRAY, self._uint(2 if b == 0xDC else 4)
        if b == 0xDE or b == 0xDF:
            return _MAP, self._uint(2 if b == 0xDE else 4)
        self._corrupt("byte 0xc1, which msgpack never uses")

    def _text(self, length: int, cap: int) -> str:
        raw = self._bounded(length, cap)
        return self._decode(raw)

    def _blob(self, length: int) -> bytes:
        return self._bounded(length, MAX_SCALAR_BYTES)

    def _bounded(self, length: int, cap: int) -> bytes:
        if self.pos + length > self.limit:
            self._overrun(length)
        if length > cap:
            if cap == MAX_KEY_BYTES:
                self._corrupt(f"a map key of {length} bytes")
            raise ConversionError(
                "UNSUPPORTED_LEAF",
                f"{self.file}: the non-array leaf at `{self._where_text()}` is {length:,} bytes long; "
                f"flax2tfjs keeps strings and bytes leaves only up to {cap:,} bytes",
                "store large data as numpy arrays, or leave it out of the saved tree",
            )
        return self._take(length)

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self._corrupt("a string that is not valid UTF-8")

    def _uint(self, n: int) -> int:
        return int.from_bytes(self._take(n), "big")

    def _sint(self, n: int) -> int:
        return int.from_bytes(self._take(n), "big", signed=True)

    def _byte(self) -> int:
        off = self.pos - self.base
        if 0 <= off < len(self.buf) and self.pos < self.limit:
            self.pos += 1
            return self.buf[off]
        return self._take(1)[0]

    def _take(self, n: int) -> bytes:
        start, end = self.pos, self.pos + n
        if end > self.limit:
            self._overrun(n)
        off = start - self.base
        if off < 0 or end - self.base > len(self.buf):
            self._fill(start, n)
            off = 0
        self.pos = end
        return self.buf[off:off + n]

    def _skip(self, n: int) -> None:
        if self.pos + n > self.limit:
            self._overrun(n)
        self.pos += n

    def _fill(self, start: int, n: int) -> None:
        self.handle.seek(start)
        want = max(n, _READ_AHEAD)
        parts = []
        got = 0
        while got < want:
            part = self.handle.read(want - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        self.buf, self.base = b"".join(parts), start
        if got < n:  # the file shrank while we read it
            self.size = start + got
            self._truncated(n)

    # -- errors -------------------------------------------------------------

    def _where_text(self) -> str:
        shown = path_str(self.where) or "(top level)"
        return f"a key in {shown}" if self.in_key else shown

    def _overrun(self, n: int) -> NoReturn:
        if self.limit < self.size:
            self._corrupt(f"a value needs {n} bytes, more than its enclosing ext payload has left")
        self._truncated(n)

    def _truncated(self, n: int, what: str = "") -> NoReturn:
        what = what or f"{n:,} bytes"
        raise ConversionError(
            "TRUNCATED_CHECKPOINT",
            f"{self.file} is truncated: reading `{self._where_text()}` at byte offset {self.pos:,} "
            f"needs {what} but the file ends at byte {self.size:,}",
            TRUNCATED_HINT,
        )

    def _corrupt(self, problem: str) -> NoReturn:
        raise ConversionError(
            "CORRUPT_CHECKPOINT",
            f"{self.file} is not a valid Flax msgpack file: at byte offset {self.value_start:,} "
            f"(`{self._where_text()}`): {problem}",
            _CORRUPT_HINT,
        )


def _in_order(items: dict[str, Any], walker: MsgpackWalker, what: str) -> list[Any]:
    """Values of a ``{'0': .., '1': ..}`` map in index order, as Flax's _dict_to_tuple reads them."""
    try:
        return [items[str(i)] for i in range(len(items))]
    except KeyError:
        walker._corrupt(f"the {what} of a chunked array are not numbered 0..{len(items) - 1}")
