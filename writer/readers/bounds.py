"""Size checks every reader makes before it allocates: memory follows the bytes really present.

The rule (documented in docs/troubleshooting.md, ``CORRUPT_CHECKPOINT``):

* a shape's dimensions must be non-negative and its size must fit numpy (below 2**62 bytes);
* a tensor larger than :data:`FREE_BYTES` may claim at most :data:`MAX_INFLATION` times the bytes
  stored for it (its chunk files, zip member, or the checkpoint's data files). Trained weights
  compress by less than 2x; a tensor 100x larger than its stored bytes is all one value (absent
  chunks mean "fill value"), which no trained layer is, or a forged header.
"""
from __future__ import annotations

import math
from typing import Sequence

from topology.vocabulary.errors import ConversionError

FREE_BYTES = 64 << 20  # below this, any claim is cheap enough to just try
MAX_INFLATION = 100
MAX_NBYTES = 1 << 62


def claimed_nbytes(shape: Sequence[int], itemsize: int) -> int:
    """Bytes of a shape, in Python integers (no int64 overflow for 2**64 dims).

    Example:
        >>> claimed_nbytes((2 ** 64, 2), 4)
        147573952589676412928
    """
    return math.prod(int(d) for d in shape) * int(itemsize)


def check_claim(where: str, shape: Sequence[int], itemsize: int, stored: int) -> None:
    """Raise ``CORRUPT_CHECKPOINT`` when ``shape`` claims far more bytes than ``stored`` can hold.

    Example:
        >>> check_claim("w", (10,), 4, 40)
        >>> check_claim("w", (2 ** 30, 6), 4, 3000)
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: CORRUPT_CHECKPOINT: w claims shape (1073741824, 6) (25,769,803,776 bytes) but only 3,000 bytes are stored for it
    """
    if any(int(d) < 0 for d in shape):
        raise ConversionError("CORRUPT_CHECKPOINT", f"{where} has a negative dimension in shape {tuple(shape)}",
                              "the checkpoint is damaged; save it again")
    nbytes = claimed_nbytes(shape, itemsize)
    if nbytes >= MAX_NBYTES or (nbytes > FREE_BYTES and nbytes > MAX_INFLATION * stored):
        raise ConversionError(
            "CORRUPT_CHECKPOINT",
            f"{where} claims shape {tuple(int(d) for d in shape)} ({nbytes:,} bytes) but only {stored:,} bytes "
            "are stored for it",
            f"the checkpoint is damaged or forged (a tensor above {FREE_BYTES >> 20} MiB may not be more than "
            f"{MAX_INFLATION}x its stored bytes); save it again from the training run",
        )
