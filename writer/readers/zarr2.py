"""Decode zarr v2 arrays (``.zarray`` + chunk keys) as Orbax writes them, from any key/value source.

What is read: C order, no filters, compressor ``null`` or ``zstd``, ``.`` or ``/`` dimension
separator, the numeric dtypes Orbax saves (bfloat16 through ml_dtypes, imported only then).
Anything else raises :class:`~writer.readers.ocdbt.Unreadable`, and the caller falls back to
tensorstore. A chunk must decode to exactly its declared size; absent chunks are refused (the
fallback knows when they mean the fill value).

Example:
    >>> meta = parse_zarray(b'{"chunks":[2],"compressor":null,"dtype":"<f4","fill_value":null,'
    ...                     b'"filters":null,"order":"C","shape":[3],"zarr_format":2}')
    >>> meta.shape, meta.dtype.name, chunk_keys(meta, 0, 3)
    ((3,), 'float32', ['0', '1'])
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from writer.readers import zstd_lib
from writer.readers.ocdbt import Unreadable

_PLAIN_DTYPES = {
    "<f2", "<f4", "<f8", "|i1", "<i1", "<i2", "<i4", "<i8", "|u1", "<u1", "<u2", "<u4", "<u8", "|b1",
}


class ForgedArray(Unreadable):
    """A ``.zarray`` no writer produces and tensorstore cannot survive (it aborts the process): refused."""


@dataclass(frozen=True)
class ZarrMeta:
    """The parts of a ``.zarray`` that reading needs."""

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    compressed: bool
    separator: str


def _dtype(name: object) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # noqa: PLC0415  (0.1 s; only bfloat16 checkpoints pay for it)
        return np.dtype(ml_dtypes.bfloat16)
    if isinstance(name, str) and name in _PLAIN_DTYPES:
        return np.dtype(name)
    raise Unreadable(f"zarr dtype {name!r} is not read directly")


def parse_zarray(text: bytes) -> ZarrMeta:
    """The shape, chunk shape, dtype and codec of a zarr v2 ``.zarray`` document."""
    try:
        meta = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unreadable(f".zarray is not JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("zarr_format") != 2:
        raise Unreadable("not a zarr v2 .zarray")
    shape, chunks = meta.get("shape"), meta.get("chunks")
    if not (isinstance(shape, list) and isinstance(chunks, list) and len(shape) == len(chunks)
            and all(type(d) is int and d >= 0 for d in shape) and all(type(c) is int and c > 0 for c in chunks)):
        raise Unreadable(".zarray shape or chunks are malformed")
    if math.prod(chunks) > max(math.prod(shape), 1 << 20):  # tensorstore aborts on 2**40-element chunks
        raise ForgedArray(f"its .zarray declares chunks {tuple(chunks)}, larger than the array {tuple(shape)}")
    compressor = meta.get("compressor")
    if compressor is not None and (not isinstance(compressor, dict) or compressor.get("id") != "zstd"):
        raise Unreadable(f"zarr compressor {compressor!r} is not read directly")
    if meta.get("filters") is not None or meta.get("order") != "C":
        raise Unreadable("zarr filters or Fortran order are not read directly")
    separator = meta.get("dimension_separator", ".")
    if separator not in (".", "/"):
        raise Unreadable("unknown zarr dimension separator")
    return ZarrMeta(tuple(shape), tuple(chunks), _dtype(meta.get("dtype")), compressor is not None, separator)


def chunk_keys(meta: ZarrMeta, row_start: int, row_stop: int) -> list[str]:
    """Keys of the chunks covering rows ``row_start:row_stop`` (axis 0), in C order."""
    if not meta.shape:
        return ["0"]
    ranges = [range(row_start // meta.chunks[0], -(-row_stop // meta.chunks[0]))]
    ranges += [range(-(-d // c)) for d, c in zip(meta.shape[1:], meta.chunks[1:])]
    return [meta.separator.join(map(str, index)) for index in itertools.product(*ranges)]


def read_rows(meta: ZarrMeta, get: Callable[[str], bytes], row_start: int, row_stop: int) -> np.ndarray:
    """Rows ``row_start:row_stop`` of the array (the whole of a 0-d array), chunk by chunk.

    ``get(key)`` returns a chunk's stored bytes. ``row_start`` must be a multiple of the chunk rows.
    """
    shape = meta.shape
    chunk_bytes = math.prod(meta.chunks) * meta.dtype.itemsize
    if not shape:
        return _decode(meta, get("0"), chunk_bytes).reshape(())
    out = np.empty((row_stop - row_start,) + shape[1:], meta.dtype)
    if out.size == 0:
        return out
    single = out.shape == meta.chunks  # one chunk holds exactly the band: decode in place
    for key in chunk_keys(meta, row_start, row_stop):
        index = tuple(int(i) for i in key.split(meta.separator))
        if single:
            _decode(meta, get(key), chunk_bytes, out)
            continue
        chunk = _decode(meta, get(key), chunk_bytes).reshape(meta.chunks)
        starts = [i * c for i, c in zip(index, meta.chunks)]
        target = tuple(slice(s - (row_start if axis == 0 else 0), min(s + c, d) - (row_start if axis == 0 else 0))
                       for axis, (s, c, d) in enumerate(zip(starts, meta.chunks, (row_stop,) + shape[1:])))
        source = tuple(slice(0, t.stop - t.start) for t in target)
        out[target] = chunk[source]
    return out


def streams_flat(meta: ZarrMeta) -> bool:
    """Whether the chunks, in key order, hold the array's values in order (bands of whole rows).

    Example:
        >>> streams_flat(ZarrMeta((10, 4), (3, 4), np.dtype("<f4"), True, "."))
        True
    """
    return bool(meta.shape) and math.prod(meta.shape) > 0 and meta.chunks[1:] == meta.shape[1:]


def stream_flat(meta: ZarrMeta, open_chunk: Callable[[str], tuple[Callable[[int], bytes], int]],
                piece_bytes: int) -> Iterator[np.ndarray]:
    """The values of a :func:`streams_flat` array, flat, in pieces of about ``piece_bytes``.

    ``open_chunk(key)`` returns ``(read, stored size)`` of a chunk. A zstd chunk is decoded as it is
    read (:func:`zstd_lib.decompress_pieces`): memory holds a piece, never a chunk, and the pieces
    are the same bytes :func:`read_rows` returns. The padding of the last chunk (zarr stores edge
    chunks whole) is decoded, to check the size, but not yielded.
    """
    itemsize = meta.dtype.itemsize
    piece = max(itemsize, piece_bytes // itemsize * itemsize)
    chunk_bytes = math.prod(meta.chunks) * itemsize
    left = math.prod(meta.shape) * itemsize
    for key in chunk_keys(meta, 0, meta.shape[0]):
        read, stored = open_chunk(key)
        if meta.compressed:
            try:
                pieces: Iterator = zstd_lib.decompress_pieces(read, chunk_bytes, piece)
                for data in pieces:
                    take = min(len(data), left)
                    if take:
                        left -= take
                        yield np.frombuffer(data, meta.dtype, take // itemsize)
            except zstd_lib.ZstdError as exc:
                raise Unreadable(str(exc)) from exc
            continue
        if stored != chunk_bytes:
            raise Unreadable(f"a chunk holds {stored:,} bytes, not {chunk_bytes:,}")
        for _ in range(0, chunk_bytes, piece):
            data = read(piece)
            take = min(len(data), left)
            if take:
                left -= take
                yield np.frombuffer(data, meta.dtype, take // itemsize)


def _decode(meta: ZarrMeta, stored: bytes, chunk_bytes: int, out: np.ndarray | None = None) -> np.ndarray:
    if not meta.compressed:
        if len(stored) != chunk_bytes:
            raise Unreadable(f"a chunk holds {len(stored):,} bytes, not {chunk_bytes:,}")
        data = np.frombuffer(stored, meta.dtype)
        if out is not None:
            out.reshape(-1)[:] = data
        return data
    try:
        if out is not None:
            zstd_lib.decompress(stored, chunk_bytes, memoryview(out.reshape(-1).view(np.uint8)))
            return out
        data = zstd_lib.decompress(stored, chunk_bytes)
    except zstd_lib.ZstdError as exc:
        raise Unreadable(str(exc)) from exc
    if len(data) != chunk_bytes:
        raise Unreadable(f"a chunk decodes to {len(data):,} bytes, not {chunk_bytes:,}")
    return np.frombuffer(data, meta.dtype)
