"""The dtypes of Flax msgpack array leaves: names as Flax writes them, and bfloat16 read as its bits.

Example:
    >>> dtype_of("float32"), dtype_of("bfloat16"), dtype_of("object")
    (dtype('<f4'), dtype('uint16'), None)
"""
from __future__ import annotations

import functools
import re
import warnings

import numpy as np

_DTYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
FLOAT32 = np.dtype("<f4")
BFLOAT16 = "bfloat16"
BF16_BITS = np.dtype("<u2")  # how a bfloat16 tensor is read: its bit patterns


@functools.lru_cache(maxsize=256)
def dtype_of(name: str) -> np.dtype | None:
    """The dtype Flax wrote as ``arr.dtype.name``; None for anything else.

    Only plain numeric numpy dtypes and ml_dtypes types: object, string and
    structured dtypes cannot be weights. Flax writes little-endian bytes.
    bfloat16 needs no library (the reader widens its bits, see :func:`widen_bfloat16`);
    ml_dtypes is imported only for the rarer types numpy lacks (float8, int4, ...):
    its import alone costs 0.7-1.5 s, more than the whole conversion of a small model.
    """
    # np.dtype() also parses comma lists and other mini-languages (with
    # ast.literal_eval); dtype names are plain identifiers, so only those go in.
    if not _DTYPE_NAME.fullmatch(name):
        return None
    if name == BFLOAT16:
        return BF16_BITS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dtype = np.dtype(name)
    except Exception:  # numpy raises TypeError, but be safe on hostile input
        return _ml_dtype(name)
    if dtype.kind not in "biufc" or dtype.name != name:
        return _ml_dtype(name)
    return dtype.newbyteorder("<")


def _ml_dtype(name: str) -> np.dtype | None:
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover  (a dependency; only exotic dtypes need it)
        return None
    kind = getattr(ml_dtypes, name, None)
    if isinstance(kind, type) and issubclass(kind, np.generic):
        return np.dtype(kind)
    return None


def widen_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) as float32: the same sign, exponent and top mantissa bits.

    bfloat16 is the upper half of a float32, so the conversion is exact (NaN payloads too).

    Example:
        >>> widen_bfloat16(np.array([0x3FC0, 0xC000], np.uint16)).tolist()
        [1.5, -2.0]
    """
    out = bits.astype("<u4")
    out <<= 16
    return out.view(FLOAT32)
