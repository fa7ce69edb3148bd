"""Exact copies of a range of one non-batch axis, from the layers tfjs 4.22 has (Reshape + Cropping2D).

tfjs has no Slice/Cropping1D layer, but Cropping2D crops axis 2 of a
(batch, P, n, Q) tensor, and a row-major Reshape to that form leaves the
element order alone. A stride s > 1 first crops (and zero-pads at the end when
needed) to ``count * s`` elements, then views them as (count, s) and keeps
column 0. Used by slices and splits, per-head products (``dot``) and constants
read off one element of an activation.
"""
from __future__ import annotations

import math

from topology.trace_kit.builder import Builder
from topology.trace_kit.values import Tensor


def _as(builder: Builder, x: Tensor, op: str, class_name: str, config: dict, shape: tuple) -> Tensor:
    return builder.add_layer(op, class_name, config, [x], shape, dtype=x.dtype)


def reshape_to(builder: Builder, x: Tensor, shape: tuple) -> Tensor:
    """``x`` reshaped to ``shape`` (batch included) by a Reshape layer; ``x`` itself when it has that shape.

    Example:
        >>> flat = reshape_to(builder, x, (x.shape[0], 12))   # doctest: +SKIP
    """
    if tuple(shape) == tuple(x.shape):
        return x
    return _as(builder, x, "reshape", "Reshape", {"target_shape": list(shape[1:])}, shape)


def take_range(builder: Builder, x: Tensor, axis: int, start: int, stop: int, stride: int = 1) -> Tensor:
    """``x`` restricted to ``range(start, stop, stride)`` along ``axis`` (not the batch axis).

    Example:
        >>> last = take_range(builder, x, 1, x.shape[1] - 1, x.shape[1])   # doctest: +SKIP
    """
    shape = tuple(x.shape)
    n = shape[axis]
    count = len(range(start, stop, stride))
    if start == 0 and count == n:  # everything, in order
        return x
    batch, outer, inner = shape[0], math.prod(shape[1:axis]), math.prod(shape[axis + 1:])
    y = reshape_to(builder, x, (batch, outer, n, inner))
    crop = lambda left, right: {"cropping": [[0, 0], [left, right]], "data_format": "channels_last"}  # noqa: E731
    if stride == 1 or count == 1:
        y = _as(builder, y, "slice", "Cropping2D", crop(start, n - start - count), (batch, outer, count, inner))
    else:
        span = count * stride
        padded = max(n, start + span)
        if padded > n:  # the last kept element is followed by fewer than stride - 1 others
            pad = {"padding": [[0, 0], [0, padded - n]], "data_format": "channels_last"}
            y = _as(builder, y, "slice_pad", "ZeroPadding2D", pad, (batch, outer, padded, inner))
        y = _as(builder, y, "slice", "Cropping2D", crop(start, padded - start - span), (batch, outer, span, inner))
        y = reshape_to(builder, y, (batch, outer * count, stride, inner))
        y = _as(builder, y, "slice_step", "Cropping2D", crop(0, stride - 1), (batch, outer * count, 1, inner))
    return reshape_to(builder, y, (*shape[:axis], count, *shape[axis + 1:]))
