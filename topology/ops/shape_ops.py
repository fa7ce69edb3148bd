"""Reshapes and transposes that keep the batch axis: Flatten, Reshape, Permute."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from topology.layers.base import Case
from topology.ops import handles
from topology.trace_kit.builder import Builder
from topology.trace_kit.errors import unsupported
from topology.trace_kit.merged_batch import SPLIT
from topology.trace_kit.values import Pending, Tensor


@handles("reshape", "squeeze", "expand_dims")
def reshape(builder: Builder, eqn: Any, values: list, where: str) -> Tensor | Pending:
    shape = tuple(eqn.outvars[0].aval.shape)
    index = values[0]
    if (isinstance(index, Pending) and index.dtype.kind in "iu" and index.root.dtype.kind in "iu" and shape
            and int(np.prod(index.root.shape[1:], dtype=np.int64)) == 1 and shape[0] == index.root.shape[0]):
        # integer positions from a per-example length stay symbolic (e.g. take_along_axis indices, ops/gather.py)
        return Pending(index.root, lambda r, fn=index.fn: np.reshape(np.asarray(fn(r)), shape), shape, index.dtype,
                       where or index.where)
    x = builder.tensor(values[0], where)
    # reshape's `dimensions` is a transpose before the reshape (squeeze's `dimensions` are just the axes dropped).
    if eqn.primitive.name == "reshape" and eqn.params.get("dimensions") is not None:
        raise unsupported("a reshape with a dimension order", where, "transpose first, then reshape")
    merged = _merge_or_split(builder, x, shape, where)
    if merged is not None:
        return merged
    if not shape or shape[0] != x.shape[0] or math.prod(shape[1:]) != math.prod(x.shape[1:]):
        raise unsupported(f"a reshape from {x.shape} to {shape} that mixes the batch axis", where,
                          "keep the batch axis first, e.g. x.reshape((x.shape[0], -1))")
    if shape == x.shape:
        return x
    if len(shape) == 2:
        return builder.add_layer("flatten", "Flatten", {"data_format": "channels_last"}, [x], shape)
    return builder.add_layer("reshape", "Reshape", {"target_shape": list(shape[1:])}, [x], shape)


def _merge_or_split(builder: Builder, x: Tensor, shape: tuple[int, ...], where: str) -> Tensor | None:
    """A reshape (B, S, ..., H) -> (B*S*..., H) that folds leading axes into the batch, or the one that
    unfolds them: an identity on the TF.js tensor (see ``topology.trace_kit.merged_batch``); None for others."""
    lead = builder.merged.lead.get(x.layer)
    identity = {"scale": 1.0, "offset": 0.0}
    if lead is not None:  # the traced (B*S, ...) is (B, S, ...) in TF.js
        real = (shape[0], *lead, *x.shape[1:])
        if not shape or shape[0] * math.prod(lead) != x.shape[0] or math.prod(shape[1:]) != math.prod(real[1:]):
            raise unsupported(f"a reshape of activations whose batch axis merges axes {lead} to {shape}", where,
                              "reshape them back to (batch, ...) first")
        if tuple(shape[1:]) == tuple(real[1:]):
            return builder.add_layer(SPLIT, "Rescaling", identity, [x], shape)
        split = builder.add_layer(SPLIT, "Rescaling", identity, [x], real)
        return builder.add_layer("reshape", "Reshape", {"target_shape": list(shape[1:])}, [split], shape)
    if not shape or shape[0] == x.shape[0]:  # the batch axis stays: an ordinary reshape
        return None
    for k in range(2, len(x.shape)):
        if shape[0] == math.prod(x.shape[:k]) and tuple(shape[1:]) == tuple(x.shape[k:]):
            out = builder.add_layer("merge_batch", "Rescaling", identity, [x], shape)
            builder.merged.lead[out.layer] = tuple(x.shape[1:k])
            builder.layers[-1].output_shape = tuple(x.shape[1:])
            return out
    return None


@handles("transpose")
def transpose(builder: Builder, eqn: Any, values: list, where: str) -> Tensor | Pending:
    permutation = tuple(eqn.params["permutation"])
    if isinstance(values[0], Pending) and getattr(values[0], "array_constants", False):
        # e.g. the axis order of a product with a constant table (ops/dot.py): still a x + b of its root
        inner, out = values[0], eqn.outvars[0].aval
        composed = Pending(inner.root, lambda r: np.transpose(inner.fn(r), permutation), tuple(out.shape),
                           np.dtype(out.dtype), where)
        composed.array_constants = True
        return composed
    x = builder.tensor(values[0], where)
    if permutation[0] != 0:
        raise unsupported(f"a transpose {permutation} that moves the batch axis", where, "keep axis 0 in place")
    if permutation == tuple(range(len(permutation))):
        return x
    return builder.add_layer("permute", "Permute", {"dims": list(permutation[1:])}, [x],
                             tuple(eqn.outvars[0].aval.shape))


def _cases():
    """Flatten, Reshape, Permute, squeeze and expand_dims between layers; Linen and NNX."""
    import flax.linen as nn
    import jax.numpy as jnp
    from flax import nnx

    class Wrap(nn.Module):  # Dense(fn(Conv(x))) or Dense(fn(x)), so the shape op sits between layers
        fn: Any
        conv: bool = True

        @nn.compact
        def __call__(self, x):
            if self.conv:
                x = nn.Conv(3, (3, 3))(x)
            return nn.Dense(2)(self.fn(x))

    class OptMlp(nn.Module):  # transformers' FlaxOPTDecoderLayer: (B, S, H) -> (B*S, H) -> MLP -> (B, S, H)
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4)(x)
            flat = nn.LayerNorm()(h).reshape(-1, h.shape[-1])
            flat = nn.LayerNorm()(nn.Dense(4)(nn.relu(nn.Dense(8)(flat))))  # OPT's final_layer_norm: on (B*S, H)
            return nn.Dense(2)(flat.reshape(h.shape) + h)

    class NnxMergedTokens(nnx.Module):  # (B, S, T, C) -> (B*S*T, C) -> Linear -> (B, S, T*D)
        def __init__(self):
            self.linear = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

        def __call__(self, x):
            b, s, t, c = x.shape
            return nnx.gelu(self.linear(x.reshape(b * s * t, c))).reshape(b, s, t * 2)

    class Tokens(nn.Module):  # (batch, 12) -> (batch, 3, 4) -> per-row Dense -> (batch, 3, 2)
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.Dense(12)(x).reshape((x.shape[0], 3, 4)))

    class Squeeze(nn.Module):  # (batch, L, C) -> Dense(1) -> (batch, L) -> Dense
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(jnp.squeeze(nn.Dense(1)(x), -1))

    class ExpandDims(nn.Module):  # (batch, F) -> (batch, F, 1) -> per-feature Dense
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(jnp.expand_dims(nn.Dense(4)(x), -1))

    class NnxFlatten(nnx.Module):
        def __init__(self):
            self.conv = nnx.Conv(2, 3, (3, 3), rngs=nnx.Rngs(0))
            self.linear = nnx.Linear(5 * 5 * 3, 2, rngs=nnx.Rngs(1))

        def __call__(self, x):
            return self.linear(self.conv(x).reshape((x.shape[0], -1)))

    class NnxPermute(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(4, 3, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.linear(jnp.swapaxes(x, 1, 2))

    return (
        Case("linen-opt-mlp-merged-batch-and-sequence", OptMlp, (5, 3)),
        Case("nnx-merged-batch-two-axes-then-reshape", NnxMergedTokens, (2, 3, 3)),
        Case("linen-flatten", lambda: Wrap(lambda x: x.reshape((x.shape[0], -1))), (5, 5, 2)),
        Case("linen-flatten-ravel-rows", lambda: Wrap(lambda x: jnp.reshape(x, (x.shape[0], 75))), (5, 5, 2)),
        Case("linen-reshape-4d-to-3d", lambda: Wrap(lambda x: x.reshape((x.shape[0], 25, 3))), (5, 5, 2)),
        Case("linen-reshape-2d-to-3d", Tokens, (6,)),
        Case("linen-transpose-hw", lambda: Wrap(lambda x: jnp.transpose(x, (0, 2, 1, 3))), (4, 5, 2)),
        Case("linen-transpose-channels-first", lambda: Wrap(lambda x: jnp.transpose(x, (0, 3, 1, 2))), (4, 5, 2)),
        Case("linen-swapaxes-3d", lambda: Wrap(lambda x: jnp.swapaxes(x, 1, 2), conv=False), (4, 3)),
        Case("linen-squeeze", Squeeze, (5, 3)),
        Case("linen-expand-dims", ExpandDims, (3,)),
        Case("linen-expand-dims-none-index", lambda: Wrap(lambda x: x[:, None], conv=False), (3,)),
        Case("nnx-flatten", NnxFlatten, (5, 5, 2)),
        Case("nnx-swapaxes", NnxPermute, (4, 3)),
    )


CASES = _cases
