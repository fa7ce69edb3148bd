"""Fast paths of the msgpack walker for the encodings Flax writes, from the bytes already buffered.

A checkpoint of 100,000 tiny layers is 300,000 keys and array headers; parsing each through the
walker's general, checked primitives costs ~25 method calls per array. These functions read the
common encodings (fixstr keys; an array leaf ``(shape, dtype name, data)`` with a fixarray shape,
a fixstr dtype name and a bin8/16/32 data header) straight from the read-ahead buffer and return
None for anything else, which the careful path then parses (and reports precisely if damaged).

Example:
    >>> payload = bytes([0x93, 0x91, 0x02, 0xA7]) + b"float32" + bytes([0xC4, 8]) + bytes(8)
    >>> array_header(payload, 0, len(payload))
    ((2,), b'float32', 13, 8)
"""
from __future__ import annotations

_UINT_WIDTH = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_BIN_WIDTH = {0xC4: 1, 0xC5: 2, 0xC6: 4}


def fixstr(buf: bytes, off: int) -> bytes | None:
    """The raw bytes of a fixstr (up to 31 bytes) starting at ``buf[off]`` if wholly buffered, else None.

    Example:
        >>> fixstr(b"\\xa4bias", 0)
        b'bias'
    """
    if off >= len(buf):
        return None
    b = buf[off]
    if not 0xA0 <= b <= 0xBF or off + 1 + (b - 0xA0) > len(buf):
        return None
    return buf[off + 1:off + 1 + (b - 0xA0)]


def array_header(buf: bytes, off: int, end: int) -> tuple[tuple[int, ...], bytes, int, int] | None:
    """Parse the ext payload ``buf[off:end]`` of an array leaf: (shape, dtype name, data offset, data length).

    Offsets are indices into ``buf``; ``end`` may lie beyond the buffer (the data is not needed,
    only its header). None when the header is not wholly buffered or not in the common encoding,
    or when the data does not fill the payload exactly.
    """
    limit = min(end, len(buf))
    try:
        if buf[off] != 0x93:
            return None
        b = buf[off + 1]
        if not 0x90 <= b <= 0x9F:
            return None
        p = off + 2
        dims = []
        for _ in range(b - 0x90):
            b = buf[p]
            if b < 0x80:
                dims.append(b)
                p += 1
            else:
                width = _UINT_WIDTH.get(b)
                if width is None:
                    return None
                dims.append(int.from_bytes(buf[p + 1:p + 1 + width], "big"))
                p += 1 + width
        b = buf[p]
        if not 0xA0 <= b <= 0xBF:
            return None
        name = buf[p + 1:p + 1 + b - 0xA0]
        p += 1 + b - 0xA0
        width = _BIN_WIDTH.get(buf[p])
        if width is None:
            return None
        nbytes = int.from_bytes(buf[p + 1:p + 1 + width], "big")
        p += 1 + width
    except IndexError:  # the header runs past the buffer
        return None
    if p > limit or p + nbytes != end:  # a short read above: the careful path decides
        return None
    return tuple(dims), name, p, nbytes
