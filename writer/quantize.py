"""Weight quantization, numpy only, in the scheme tfjs decodes (io_utils.js ``decodeWeight``).

* ``float16``: IEEE half; tfjs expands it to float32 exactly.
* ``uint8`` / ``uint16``: affine, ``value = q * scale + min``, with ``min`` nudged
  so that 0.0 is exactly representable (the official converter's scheme).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

import numpy as np

from writer.tfjs_files import itemsize

QUANTIZE_DTYPES = ("float16", "uint8", "uint16")


@dataclass(frozen=True)
class QuantizeOptions:
    """Which dtype to quantize to, and which weights (wildcards on ``<layer>/<weight>``).

    Example:
        >>> QuantizeOptions("uint8", ("dense*",)).applies_to("dense_1/kernel")
        True
    """

    dtype: str | None = None
    patterns: tuple[str, ...] = ()

    def applies_to(self, weight_name: str) -> bool:
        if self.dtype is None:
            return False
        return not self.patterns or any(fnmatch.fnmatchcase(weight_name, p) for p in self.patterns)


def quantize(values: np.ndarray, dtype: str) -> tuple[np.ndarray, dict]:
    """Quantize float32 ``values``; return the stored array and the manifest's ``quantization``.

    Example:
        >>> q, meta = quantize(np.array([-1.0, 0.0, 1.0], np.float32), "uint8")
        >>> q.tolist(), meta["dtype"]
        ([0, 128, 255], 'uint8')
        >>> float(q[1] * meta["scale"] + meta["min"])
        0.0
    """
    if dtype == "float16":
        return values.astype("<f2"), quantized_meta(0.0, 0.0, dtype)[0]
    if dtype not in ("uint8", "uint16"):
        raise ValueError(f"unknown quantization dtype {dtype!r}")
    low = float(values.min()) if values.size else 0.0
    high = float(values.max()) if values.size else 0.0
    meta, affine = quantized_meta(low, high, dtype)
    return affine(values), meta


def quantized_meta(low: float, high: float, dtype: str) -> tuple[dict, Callable[[np.ndarray], np.ndarray]]:
    """The manifest entry for values in [low, high], and the function quantizing any part of them.

    Streaming writers call it once per tensor (after a pass for min and max), then quantize
    slice by slice: the arithmetic is element-wise, so the bytes equal :func:`quantize`'s.

    Example:
        >>> meta, affine = quantized_meta(-1.0, 1.0, "uint8")
        >>> affine(np.array([0.0], np.float32)).tolist(), meta["min"] < 0
        ([128], True)
    """
    if dtype == "float16":
        return {"dtype": "float16", "original_dtype": "float32"}, lambda v: v.astype("<f2")
    stored_dtype = np.dtype(dtype).newbyteorder("<")
    if low == high:
        scale, minimum = 1.0, low

        def affine(values: np.ndarray) -> np.ndarray:
            return np.zeros(values.shape, dtype=stored_dtype)
    else:
        scale, minimum, maximum = affine_range(low, high, float(np.iinfo(dtype).max))

        def affine(values: np.ndarray) -> np.ndarray:
            return affine_blocks(values, minimum, maximum, scale, dtype).astype(stored_dtype, copy=False)
    return {"dtype": dtype, "min": minimum, "scale": scale, "original_dtype": "float32"}, affine


_BLOCK = 1 << 20  # elements per step: 8 MB of float64 scratch instead of 4 copies of the tensor


def affine_blocks(values: np.ndarray, minimum: float, maximum: float, scale: float, dtype: str) -> np.ndarray:
    """``round((clip(v, min, max) - min) / scale)`` in float64, block by block.

    The same arithmetic as on the whole array (so the same bytes), but the float64
    temporaries are one block, not four tensor-sized arrays: a 64 MB kernel peaked at
    ~450 MB of scratch before (perf: bench/, issue 7).
    """
    flat = values.reshape(-1)
    stored = np.empty(flat.shape, dtype=dtype)
    scratch = np.empty(min(_BLOCK, flat.size), dtype=np.float64)
    for start in range(0, flat.size, _BLOCK):
        part = flat[start:start + _BLOCK]
        work = scratch[:part.size]
        work[...] = part
        np.clip(work, minimum, maximum, out=work)
        work -= minimum
        work /= scale
        np.round(work, out=work)
        stored[start:start + part.size] = work
    return stored.reshape(values.shape)


def affine_range(low: float, high: float, quant_max: float) -> tuple[float, float, float]:
    """Scale and nudged (min, max) so that 0.0 maps to an integer level when low <= 0 <= high.

    Example:
        >>> affine_range(-1.0, 1.0, 255.0)[1] * -1 / affine_range(-1.0, 1.0, 255.0)[0]
        128.0
    """
    scale = (high - low) / quant_max
    if low <= 0.0 <= high:
        zero_point = round(-low / scale)
        low = -zero_point * scale
    return scale, low, low + quant_max * scale


def stored_itemsize(dtype: str | None) -> int:
    """Bytes per element in the weight file for a quantization dtype (None = float32).

    Example:
        >>> stored_itemsize("uint8"), stored_itemsize(None)
        (1, 4)
    """
    return itemsize(dtype or "float32")
