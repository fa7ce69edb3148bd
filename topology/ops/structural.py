"""Padding and running sums with exact layer equivalents: ``jnp.pad`` and ``jnp.cumsum``.

``jnp.pad(x, ..., constant_values=c)`` (lm1b's shift-right, Wav2Vec2's pad before a VALID
conv) pads one non-batch axis at a time: a row-major Reshape to (batch, outer, n, inner) leaves
the element order alone, ZeroPadding2D adds the zeros, a Reshape restores the rank; for c != 0 a
constant tensor holding c where the padding is (0 elsewhere) is added. Negative padding crops
(``ranges.take_range``). Exact: zeros are copied, x + 0 = x and 0 + c = c.

``jnp.cumsum(x, axis)`` of float activations is a Dense with a triangular 0/1 kernel on that axis
(Permute to the end and back when it is not the last). Exact while the partial sums are exactly
representable in float32 (0/1 masks, small integers: a position count over a padding mask); an
integer cumsum is summed the same way and is exact while every partial sum is below 2**24;
for other values it is the same sum in another order (float32 rounding differences only).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from topology.graph import WeightBinding
from topology.layers.base import Case, layer_base
from topology.layers.dense import dense_config
from topology.ops import handles
from topology.ops.ranges import reshape_to, take_range
from topology.trace_kit.builder import Builder
from topology.trace_kit.errors import unsupported
from topology.trace_kit.values import Const, Tensor


@handles("pad")
def pad(builder: Builder, eqn: Any, values: list, where: str) -> Tensor:
    """``lax.pad`` with a constant value and no interior padding, one non-batch axis at a time.

    Example:
        >>> padded = pad(builder, eqn, [x, Const(np.float32(0))], "model.py:4")   # doctest: +SKIP
    """
    value = values[1]
    if not isinstance(value, Const) or not value.known:
        raise unsupported("padding with a value computed from activations or parameters", where,
                          "pad with a constant (constant_values=0, or a number)")
    fill = float(np.asarray(value.value))
    config = [tuple(int(p) for p in axis) for axis in eqn.params["padding_config"]]
    if config[0] != (0, 0, 0):
        raise unsupported("padding of the batch axis", where, "pad the other axes only")
    if any(interior for _, _, interior in config):
        raise unsupported("interior padding (lax.pad with interior > 0)", where, "pad at the edges only")
    x = builder.tensor(values[0], where)
    if fill != 0 and x.dtype.kind != "f":
        raise unsupported(f"padding integer activations with {fill:g}", where, "pad integers with 0")
    zero_padded = x
    for axis, (low, high, _) in enumerate(config):
        if axis == 0 or (low, high) == (0, 0):
            continue
        n = zero_padded.shape[axis]
        zero_padded = take_range(builder, zero_padded, axis, max(0, -low), n - max(0, -high))
        zero_padded = _zero_pad(builder, zero_padded, axis, max(0, low), max(0, high))
    if fill == 0:
        return zero_padded
    mask = np.zeros(x.shape[1:], np.float32)
    inside = tuple(slice(max(0, -low), n - max(0, -high)) for (low, high, _), n in zip(config[1:], x.shape[1:]))
    cropped = mask[inside]
    pads = [(max(0, low), max(0, high)) for low, high, _ in config[1:]]
    fill_mask = np.pad(np.zeros_like(cropped), pads, constant_values=fill)[None]
    shape = tuple(eqn.outvars[0].aval.shape)
    filler = builder.constant_tensor(Const(fill_mask), zero_padded, where)
    return builder.add_layer("pad_value", "Add", {}, [zero_padded, filler], shape)


def _zero_pad(builder: Builder, x: Tensor, axis: int, low: int, high: int) -> Tensor:
    if (low, high) == (0, 0):
        return x
    shape = tuple(x.shape)
    outer, n, inner = int(np.prod(shape[1:axis])), shape[axis], int(np.prod(shape[axis + 1:]))
    view = reshape_to(builder, x, (shape[0], outer, n, inner))
    padded = builder.add_layer("pad", "ZeroPadding2D", {"padding": [[0, 0], [low, high]],
                                                         "data_format": "channels_last"},
                               [view], (shape[0], outer, n + low + high, inner), dtype=x.dtype)
    return reshape_to(builder, padded, (*shape[:axis], n + low + high, *shape[axis + 1:]))


@handles("cumsum")
def cumsum(builder: Builder, eqn: Any, values: list, where: str) -> Tensor:
    """``jnp.cumsum`` of float activations along a non-batch axis: a Dense with a triangular kernel.

    Example:
        >>> running = cumsum(builder, eqn, [mask], "model.py:9")   # doctest: +SKIP
    """
    x = builder.tensor(values[0], where)
    axis, reverse = int(eqn.params["axis"]), bool(eqn.params.get("reverse", False))
    if axis == 0:
        raise unsupported("a running sum over the batch axis", where, "sum over another axis")
    if x.dtype.kind not in "fiub":
        raise unsupported(f"a running sum (cumsum) of {x.dtype}", where, "sum float or integer values")
    # Integers (RoBERTa's position ids: a cumsum of the padding mask) are summed in float32 like floats:
    # exact while every partial sum is below 2**24 in magnitude; the result stays integer-valued.
    dtype = x.dtype
    shape = tuple(x.shape)
    last = len(shape) - 1
    dims = list(range(1, len(shape)))
    if axis != last:
        dims[axis - 1], dims[-1] = dims[-1], dims[axis - 1]
        x = builder.add_layer("cumsum_permute", "Permute", layer_base(dims=dims), [x],
                              (shape[0], *(shape[d] for d in dims)), dtype=dtype)
    n = shape[axis]
    kernel = (np.triu if not reverse else np.tril)(np.ones((n, n), np.float32))  # out[j] = sum of x[i], i <= j
    summed = builder.add_layer("cumsum", "Dense", dense_config(n, use_bias=False), [x], x.shape,
                               [WeightBinding("kernel", (n, n), constant=kernel)], origin=f"cumsum {where}".strip(),
                               dtype=dtype)
    if axis == last:
        return summed
    return builder.add_layer("cumsum_permute", "Permute", layer_base(dims=dims), [summed], shape, dtype=dtype)


def _cases():
    """Zero and constant padding on 1-3 axes, cropping by negative padding, shift-right of token ids,
    cumsum of activations on the last and a middle axis, RoBERTa's position ids (an integer cumsum of
    `ids != pad`); Linen and NNX."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class Around(nn.Module):  # Dense -> fn -> Dense
        fn: Any

        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(self.fn(nn.Dense(4)(x)))

    class PadConv(nn.Module):  # Wav2Vec2's positional conv: pad, then a VALID conv
        @nn.compact
        def __call__(self, x):
            return nn.Conv(3, (3,), padding="VALID")(jnp.pad(x, ((0, 0), (1, 1), (0, 0))))

    class ShiftRight(nn.Module):  # flax lm1b / wmt decoder input: ids shifted right by one
        @nn.compact
        def __call__(self, ids):
            shifted = jnp.pad(ids, ((0, 0), (1, 0)), constant_values=0)[:, :-1]
            return nn.Dense(2)(nn.Embed(10, 4)(shifted))

    class PositionIds(nn.Module):  # RoBERTa: positions count the non-padding tokens (padding id 1)
        @nn.compact
        def __call__(self, ids):
            mask = (ids != 1).astype(jnp.int32)
            positions = jnp.cumsum(mask, axis=1).astype(jnp.int32) * mask + 1
            return nn.Embed(12, 4)(positions) + nn.Embed(2, 4)((ids == 3).astype(jnp.int32)) + nn.Embed(10, 4)(ids)

    class NnxPad(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return jnp.pad(self.linear(x), ((0, 0), (2, 0), (0, 1)), constant_values=-1.5)

    class NnxCumsum(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return jnp.cumsum(self.linear(x), axis=1)

    return (
        Case("linen-pad-features-value", lambda: Around(lambda x: jnp.pad(x, ((0, 0), (0, 2)), constant_values=0.5)),
             (3,)),
        Case("linen-lax-pad-image-negative-crops",
             lambda: Around(lambda x: jax.lax.pad(x, 0.0, ((0, 0, 0), (1, -1, 0), (-1, 2, 0), (0, 0, 0)))), (4, 4, 2)),
        Case("linen-pad-then-valid-conv", PadConv, (6, 2)),
        Case("linen-shift-right-token-ids", ShiftRight, (6,), input_dtype="int32", input_range=(0, 10)),
        Case("linen-cumsum-last", lambda: Around(lambda x: jnp.cumsum(x, axis=-1)), (5,)),
        Case("linen-cumsum-reverse-middle", lambda: Around(lambda x: jax.lax.cumsum(x, axis=1, reverse=True)), (5, 3)),
        Case("linen-roberta-position-ids", PositionIds, (8,), input_dtype="int32", input_range=(0, 10)),
        Case("nnx-pad-value", NnxPad, (4, 3)),
        Case("nnx-cumsum-length", NnxCumsum, (5, 3)),
    )


CASES = _cases
