"""Zstandard decompression through the system's libzstd (ctypes), so reading needs no extra package.

Orbax compresses OCDBT nodes and zarr chunks with zstd. Python 3.11 has no zstd module, and
the ``zstandard`` wheel would be a new dependency; ``libzstd.so.1`` is on practically every Linux
(dpkg and systemd need it). Where it is missing, :func:`available` is False and the Orbax reader
falls back to tensorstore.

Example:
    >>> available() in (True, False)
    True
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Callable, Iterator

_UNKNOWN = (1 << 64) - 1  # ZSTD_CONTENTSIZE_UNKNOWN
_ERROR = (1 << 64) - 2  # ZSTD_CONTENTSIZE_ERROR
_lib: ctypes.CDLL | None | bool = False  # False: not looked for yet


class _Buffer(ctypes.Structure):  # ZSTD_inBuffer and ZSTD_outBuffer have the same layout
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_size_t), ("pos", ctypes.c_size_t)]


class ZstdError(ValueError):
    """A frame that is not zstd, declares no or too large a size, or does not decode."""


def _load() -> ctypes.CDLL | None:
    global _lib
    if _lib is False:
        _lib = None
        names = ["libzstd.so.1", "libzstd.so", ctypes.util.find_library("zstd")]
        if sys.platform == "darwin":
            names = ["libzstd.1.dylib", "libzstd.dylib"] + names[2:]
        for name in names:
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            lib.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
            lib.ZSTD_getFrameContentSize.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
            lib.ZSTD_decompress.restype = ctypes.c_size_t
            lib.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
            lib.ZSTD_isError.restype = ctypes.c_uint
            lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
            lib.ZSTD_createDStream.restype = ctypes.c_void_p
            lib.ZSTD_freeDStream.argtypes = [ctypes.c_void_p]
            lib.ZSTD_decompressStream.restype = ctypes.c_size_t
            lib.ZSTD_decompressStream.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
            _lib = lib
            break
    return _lib or None


def available() -> bool:
    """True when libzstd can be loaded."""
    return _load() is not None


def decompress(frame: bytes, limit: int, into: memoryview | None = None) -> bytes | bytearray | memoryview:
    """Decode one zstd ``frame`` whose declared content size is at most ``limit`` bytes.

    When the frame header declares its size (zarr chunks), memory is bounded before anything is
    allocated; otherwise (OCDBT nodes, written as a stream) the frame is decoded in steps and
    refused as soon as it passes ``limit``. With ``into`` (a writable buffer of exactly the
    decoded size) the bytes land there and ``into`` is returned.
    """
    lib = _load()
    if lib is None:
        raise ZstdError("libzstd is not available")
    size = lib.ZSTD_getFrameContentSize(frame, len(frame))
    if size == _ERROR:
        raise ZstdError("not a zstd frame")
    if size == _UNKNOWN:
        data = _stream(lib, frame, limit)
        if into is not None:
            if len(data) != len(into):
                raise ZstdError(f"zstd frame holds {len(data):,} bytes, not the {len(into):,} expected")
            into[:] = data
            return into
        return data
    if size > limit:
        raise ZstdError(f"zstd frame declares {size:,} bytes, more than the {limit:,} expected")
    if into is not None:
        if len(into) != size:
            raise ZstdError(f"zstd frame declares {size:,} bytes, not the {len(into):,} expected")
        target = (ctypes.c_char * size).from_buffer(into) if size else None
        out = into
    else:
        buffer = bytearray(size)
        target = (ctypes.c_char * size).from_buffer(buffer) if size else None
        out = buffer
    if size == 0:
        return out if into is not None else b""
    got = lib.ZSTD_decompress(ctypes.addressof(target), size, frame, len(frame))
    if lib.ZSTD_isError(got) or got != size:
        raise ZstdError("the zstd frame is damaged")
    return out


def decompress_pieces(read: Callable[[int], bytes], size: int, piece_bytes: int) -> Iterator[bytearray]:
    """Decode one zstd frame that must hold exactly ``size`` bytes, in pieces of ``piece_bytes``.

    ``read(n)`` returns up to ``n`` more bytes of the frame (``b""`` at its end), so neither the
    frame nor its content is ever whole in memory: a 64 MiB zarr chunk is read 1 MiB and decoded
    ``piece_bytes`` at a time, and the allocator reuses the freed pieces (a whole chunk would be
    fresh memory every time, whose page faults cost about as much as the decoding). Every piece
    is full except the last; a frame that decodes to another size, or is damaged or truncated,
    raises :class:`ZstdError` (possibly after some pieces were yielded).

    Example:
        >>> import io
        >>> frame = bytes.fromhex("28b52ffd0458290000616161616168414513")   # `zstd` of b"aaaaa"
        >>> [bytes(p) for p in decompress_pieces(io.BytesIO(frame).read, 5, 2)]
        [b'aa', b'aa', b'a']
    """
    lib = _load()
    if lib is None:
        raise ZstdError("libzstd is not available")
    stream = lib.ZSTD_createDStream()
    if not stream:
        raise ZstdError("libzstd could not allocate a stream")
    try:
        done, chunk, ended = 0, b"", False
        inbuf = _Buffer(None, 0, 0)
        while True:
            piece = bytearray(min(piece_bytes, size - done) or 1)  # 1: room to see bytes past the end
            target = (ctypes.c_char * len(piece)).from_buffer(piece)
            outbuf = _Buffer(ctypes.addressof(target), len(piece), 0)
            while outbuf.pos < outbuf.size:
                if inbuf.pos == inbuf.size and not ended:
                    chunk = read(_READ_STEP)
                    ended = not chunk
                    source = ctypes.c_char_p(chunk)
                    inbuf = _Buffer(ctypes.cast(source, ctypes.c_void_p), len(chunk), 0)
                left = lib.ZSTD_decompressStream(stream, ctypes.byref(outbuf), ctypes.byref(inbuf))
                if lib.ZSTD_isError(left):
                    raise ZstdError("the zstd frame is damaged")
                if left == 0:  # the frame is complete
                    break
                if ended and inbuf.pos == inbuf.size and outbuf.pos < outbuf.size:
                    raise ZstdError("the zstd frame is truncated")
            del target
            if done + outbuf.pos > size or (left == 0 and done + outbuf.pos < size):
                raise ZstdError(f"zstd frame does not decode to the {size:,} bytes expected")
            if outbuf.pos:
                done += outbuf.pos
                if outbuf.pos < len(piece):
                    del piece[outbuf.pos:]
                yield piece
            if left == 0:
                if inbuf.pos != inbuf.size or read(1):
                    raise ZstdError("bytes follow the zstd frame")
                return
            if done == size:  # all bytes out but the frame not closed: one more step must close it
                continue
    finally:
        lib.ZSTD_freeDStream(stream)


_READ_STEP = 1 << 20  # compressed bytes read per step


def _stream(lib: ctypes.CDLL, frame: bytes, limit: int) -> bytes:
    """Decode a frame without a declared size, 1 MiB at a time, refusing more than ``limit`` bytes."""
    stream = lib.ZSTD_createDStream()
    if not stream:
        raise ZstdError("libzstd could not allocate a stream")
    try:
        source = ctypes.create_string_buffer(frame, len(frame))
        inbuf = _Buffer(ctypes.addressof(source), len(frame), 0)
        step = ctypes.create_string_buffer(1 << 20)
        parts: list[bytes] = []
        total = 0
        while True:
            outbuf = _Buffer(ctypes.addressof(step), len(step), 0)
            left = lib.ZSTD_decompressStream(stream, ctypes.byref(outbuf), ctypes.byref(inbuf))
            if lib.ZSTD_isError(left):
                raise ZstdError("the zstd frame is damaged")
            total += outbuf.pos
            if total > limit:
                raise ZstdError(f"zstd frame decodes to more than the {limit:,} bytes expected")
            parts.append(ctypes.string_at(ctypes.addressof(step), outbuf.pos))
            if left == 0 and inbuf.pos == inbuf.size:
                return b"".join(parts)
            if inbuf.pos == inbuf.size and outbuf.pos < outbuf.size:
                raise ZstdError("the zstd frame is truncated")
    finally:
        lib.ZSTD_freeDStream(stream)
