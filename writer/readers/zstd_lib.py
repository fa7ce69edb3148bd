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

_UNKNOWN = (1 << 64) - 1  # ZSTD_CONTENTSIZE_UNKNOWN
_ERROR = (1 << 64) - 2  # ZSTD_CONTENTSIZE_ERROR
_lib: ctypes.CDLL | None | bool = False  # False: not looked for yet


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
            _lib = lib
            break
    return _lib or None


def available() -> bool:
    """True when libzstd can be loaded."""
    return _load() is not None


def decompress(frame: bytes, limit: int, into: memoryview | None = None) -> bytes | bytearray | memoryview:
    """Decode one zstd ``frame`` whose declared content size is at most ``limit`` bytes.

    The size must be declared in the frame header (Orbax's writers always declare it), so
    memory is bounded before anything is allocated. With ``into`` (a writable buffer of exactly
    the declared size) the bytes land there and ``into`` is returned.
    """
    lib = _load()
    if lib is None:
        raise ZstdError("libzstd is not available")
    size = lib.ZSTD_getFrameContentSize(frame, len(frame))
    if size in (_UNKNOWN, _ERROR):
        raise ZstdError("not a zstd frame with a declared size")
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
