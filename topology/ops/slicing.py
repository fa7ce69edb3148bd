"""Static slices and splits of non-batch axes -> Reshape + Cropping2D (+ ZeroPadding2D).

tfjs 4.22 has no Slice/Cropping1D layer, but Cropping2D crops axis 2 of a
(batch, P, n, Q) tensor, and a row-major Reshape to that form leaves the
element order alone. So ``x[:, -1]``, ``x[:, 1:4]``, ``x[..., :2]`` and
``jnp.split`` are exact copies, at any rank. A stride s > 1 first crops (and
zero-pads at the end when needed) to ``count * s`` elements, then views them as
(count, s) and keeps column 0.
"""
from __future__ import annotations

import math
from typing import Any

from topology.ops import handles
from topology.trace.values import Tensor


def _as(builder: Any, x: Tensor, op: str, class_name: str, config: dict, shape: tuple) -> Tensor:
    return builder.add_layer(op, class_name, config, [x], shape, dtype=x.dtype)


def _reshape(builder: Any, x: Tensor, shape: tuple) -> Tensor:
    if tuple(shape) == tuple(x.shape):
        return x
    return _as(builder, x, "reshape", "Reshape", {"target_shape": list(shape[1:])}, shape)


def take_range(builder: Any, x: Tensor, axis: int, start: int, stop: int, stride: int = 1) -> Tensor:
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
    y = _reshape(builder, x, (batch, outer, n, inner))
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
        y = _reshape(builder, y, (batch, outer * count, stride, inner))
        y = _as(builder, y, "slice_step", "Cropping2D", crop(0, stride - 1), (batch, outer * count, 1, inner))
    return _reshape(builder, y, (*shape[:axis], count, *shape[axis + 1:]))


@handles("slice")
def slice_(builder: Any, eqn: Any, values: list, where: str) -> Tensor:
    """``lax.slice`` (``x[:, -1]``, ``x[:, 1:4]``, ``x[..., ::2]``), one axis at a time.

    Example:
        >>> slice_(builder, eqn, [x], "model.py:12")   # doctest: +SKIP
    """
    from topology.trace.build import unsupported

    x = builder.tensor(values[0], where)
    starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * len(starts)
    if (starts[0], limits[0], strides[0]) != (0, x.shape[0], 1):
        raise unsupported("a slice of the batch axis", where, "slice only the other axes, e.g. x[:, -1]")
    for axis in range(1, len(starts)):
        x = take_range(builder, x, axis, int(starts[axis]), int(limits[axis]), int(strides[axis]))
    return x


@handles("split")
def split(builder: Any, eqn: Any, values: list, where: str) -> list[Tensor]:
    """``jnp.split`` / ``lax.split``: one crop per piece.

    Example:
        >>> a, b = split(builder, eqn, [x], "model.py:12")   # doctest: +SKIP
    """
    from topology.trace.build import unsupported

    x = builder.tensor(values[0], where)
    axis = eqn.params["axis"]
    if axis == 0:
        raise unsupported("a split of the batch axis", where, "split another axis")
    pieces, start = [], 0
    for size in eqn.params["sizes"]:
        pieces.append(take_range(builder, x, axis, start, start + int(size)))
        start += int(size)
    return pieces


def _cases():
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from topology.layers.base import Case

    class Around(nn.Module):  # Dense -> fn -> Dense, so the slice sits between layers
        fn: Any

        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(self.fn(nn.Dense(4)(x)))

    class OnInput(nn.Module):  # the slice reads the model input itself
        fn: Any

        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(self.fn(x))

    class Glu(nn.Module):  # jnp.split into a gated linear unit
        @nn.compact
        def __call__(self, x):
            a, b = jnp.split(nn.Dense(6)(x), 2, axis=-1)
            return a * jax.nn.sigmoid(b)

    class NnxLast(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.linear(x)[:, -1, :]

    return (
        Case("linen-last-step", lambda: Around(lambda x: x[:, -1, :]), (5, 3)),
        Case("linen-first-step-on-input", lambda: OnInput(lambda x: x[:, 0]), (5, 3)),
        Case("linen-range", lambda: Around(lambda x: x[:, 1:4]), (6, 3)),
        Case("linen-strided", lambda: Around(lambda x: x[:, 1::2]), (8, 3)),
        Case("linen-strided-padded", lambda: Around(lambda x: x[:, ::3]), (7, 3)),
        Case("linen-features", lambda: Around(lambda x: x[..., 1:3]), (5, 3)),
        Case("linen-image-crop", lambda: OnInput(lambda x: x[:, 1:4, 2:5, :2].reshape(x.shape[0], -1)), (6, 6, 3)),
        Case("linen-split-glu", Glu, (5,)),
        Case("nnx-last-step", NnxLast, (4, 3)),
    )


CASES = _cases
