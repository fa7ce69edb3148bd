"""Reductions over spatial axes -> GlobalAverage/GlobalMax pooling (+ Reshape for keepdims).

A pending function whose shape differs from its root's is tried against
mean / max / min / sum over every set of non-batch axes. Supported: all
spatial axes of a channels-last tensor (global pooling). ``sum`` is the mean
times the cell count (Rescaling), ``min`` is -max(-x) (exact). tfjs has no
3-D global pooling: 3 spatial axes are reshaped to one first (same cells).
tfjs ignores ``keepdims``, so a Reshape restores the kept axes.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from topology.layers.base import Case
from topology.ops.catalog import CATALOG, close, probes
from topology.trace_kit.builder import Builder
from topology.trace_kit.errors import unsupported
from topology.trace_kit.values import Pending, Tensor

_GLOBAL = {"mean": "GlobalAveragePooling{n}D", "max": "GlobalMaxPooling{n}D"}
_REDUCTIONS = (("mean", np.mean), ("max", np.max), ("min", np.min), ("sum", np.sum))


def materialize_reduction(builder: Builder, pending: Pending, x: np.ndarray, y: np.ndarray) -> Tensor:
    """Identify a pending function whose shape differs from its input's: mean/max/min/sum over axes.

    The match must hold on several probes, including all-negative and all-positive
    ones: on one mixed probe max(relu(x)) and max(x) are equal, so a single probe
    would drop the relu.
    """
    root = pending.root
    rank = len(root.shape)
    mixed = [x] + probes(root.shape, root.dtype)[1:3]
    xs = [p.astype(np.float64) for p in mixed + [-np.abs(x), np.abs(x)]]
    traced = root.dtype if np.dtype(root.dtype).kind in "iu" else np.float32  # an int root takes only ints
    ys = [np.asarray(y, np.float64)] + [np.asarray(pending.fn(p.astype(traced)), np.float64) for p in xs[1:]]
    match = _match(xs, ys, rank)
    if match is not None:
        return _emit(builder, root, *match, tuple(y.shape), pending.where)
    for function in CATALOG:  # an activation right before the reduction, e.g. mean(relu(x)): emit both
        with np.errstate(all="ignore"):
            match = _match([function.reference(p) for p in xs], ys, rank)
        if match is not None:
            return _emit(builder, function.emit(builder, root), *match, tuple(y.shape), pending.where)
    if y.size == x.size and y.shape[0] == x.shape[0]:
        if all(close(b.reshape(a.shape), a) for a, b in zip(xs, ys)):
            return builder.add_layer("reshape", "Reshape", {"target_shape": list(y.shape[1:])}, [root], tuple(y.shape))
    repeated = _repeat(builder, pending, xs[:3])
    if repeated is not None:
        return repeated
    raise unsupported(f"a reduction or broadcast from {root.shape} to {tuple(y.shape)}", pending.where,
                      "supported: mean, max, min or sum over all spatial axes (global pooling), "
                      "optionally right after an activation")


def _repeat(builder: Builder, pending: Pending, xs: list[np.ndarray]) -> Tensor | None:
    """A broadcast of the root along one new (or size-1) non-batch axis, e.g. Llama's grouped-query
    ``repeat_kv`` (B, S, KV, D) -> (B, S, KV, n, D): Reshape to a size-1 axis, then Concatenate n copies
    (exact). None when ``pending`` is no such broadcast."""
    root, shape = pending.root, tuple(pending.shape)
    for axis in range(1, len(shape)):
        if len(shape) == len(root.shape) + 1:
            one = (*root.shape[:axis], 1, *root.shape[axis:])
        elif len(shape) == len(root.shape) and root.shape[axis] == 1:
            one = tuple(root.shape)
        else:
            return None
        if one == shape or any(a not in (1, b) for a, b in zip(one, shape)) or one[axis] != 1:
            continue
        probe = [p.astype(np.float32) for p in xs]
        if all(np.array_equal(np.asarray(pending.fn(p)), np.broadcast_to(p.reshape(one), shape)) for p in probe):
            source = root
            if one != tuple(root.shape):
                source = builder.add_layer("repeat_axis", "Reshape", {"target_shape": list(one[1:])}, [root], one)
            return builder.add_layer("repeat", "Concatenate", {"axis": axis}, [source] * shape[axis], shape)
    return None


def _match(xs: list[np.ndarray], ys: list[np.ndarray], rank: int) -> tuple[str, tuple, bool] | None:
    """(reduction, axes, keepdims) with every y = that reduction of its x over axes, if any."""
    for count in range(1, rank):
        for axes in itertools.combinations(range(1, rank), count):
            for name, reduce in _REDUCTIONS:
                for keepdims in (False, True):
                    if all(close(y, reduce(x, axis=axes, keepdims=keepdims)) for x, y in zip(xs, ys)):
                        return name, axes, keepdims
    return None


def _emit(builder: Builder, root: Tensor, name: str, axes: tuple, keepdims: bool, shape: tuple, where: str) -> Tensor:
    spatial = tuple(range(1, len(root.shape) - 1))
    if axes != spatial or not spatial:
        raise unsupported(f"{name} over axes {axes} of a {len(root.shape)}-D tensor", where,
                          "supported: mean/max/min/sum over all spatial axes of a channels-last tensor "
                          "(not over the channel axis)")
    source = root
    if len(spatial) > 2:  # tfjs has 1-D and 2-D global pooling only: (D, H, W, C) -> (D*H*W, C)
        cells = math.prod(root.shape[1:-1])
        source = builder.add_layer("reshape", "Reshape", {"target_shape": [cells, root.shape[-1]]}, [root],
                                   (root.shape[0], cells, root.shape[-1]))
    if name == "min":
        source = builder.add_layer("negate", "Rescaling", {"scale": -1.0, "offset": 0.0}, [source], source.shape)
    n = len(source.shape) - 2
    class_name = _GLOBAL["max" if name in ("max", "min") else "mean"].format(n=n)
    config = {"data_format": "channels_last"} if n == 2 else {}
    pooled_shape = (root.shape[0], root.shape[-1])
    pooled = builder.add_layer(f"global_{name}", class_name, config, [source], pooled_shape)
    if name in ("min", "sum"):
        scale = -1.0 if name == "min" else float(math.prod(root.shape[1:-1]))
        pooled = builder.add_layer(name, "Rescaling", {"scale": scale, "offset": 0.0}, [pooled], pooled_shape)
    if keepdims:
        return builder.add_layer("reshape", "Reshape", {"target_shape": list(shape[1:])}, [pooled], shape)
    return pooled


def _cases():
    """Global mean/max/min/sum pooling over 1-3 spatial axes, with and without keepdims; Linen and NNX."""
    import flax.linen as nn
    import jax.numpy as jnp
    from flax import nnx

    class Head(nn.Module):  # Conv -> reduce over spatial axes -> Dense
        fn: Any

        @nn.compact
        def __call__(self, x):
            features = nn.Conv(4, (3,) * (x.ndim - 2))(x)
            return nn.Dense(3)(self.fn(features))

    class NnxHead(nnx.Module):
        def __init__(self, fn: Any):
            self.fn = fn
            self.conv = nnx.Conv(2, 4, (3, 3), rngs=nnx.Rngs(0))
            self.linear = nnx.Linear(4, 3, rngs=nnx.Rngs(1))

        def __call__(self, x):
            return self.linear(self.fn(self.conv(x)))

    class RepeatKv(nn.Module):  # transformers' Llama/Gemma grouped-query attention: repeat_kv by broadcasting
        @nn.compact
        def __call__(self, x):
            kv = nn.Dense(4)(x).reshape((x.shape[0], x.shape[1], 2, 2))
            repeated = jnp.broadcast_to(kv[:, :, :, None, :], (x.shape[0], x.shape[1], 2, 3, 2))
            return nn.Dense(2)(repeated.reshape((x.shape[0], x.shape[1], 12)))

    class NnxRepeat(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))

        def __call__(self, x):
            h = self.linear(x)
            return jnp.broadcast_to(h[:, None, :], (h.shape[0], 3, h.shape[1]))

    return (
        Case("linen-repeat-kv-broadcast-new-axis", RepeatKv, (4, 3)),
        Case("nnx-broadcast-to-new-axis", NnxRepeat, (3,)),
        Case("linen-mean-hw", lambda: Head(lambda x: jnp.mean(x, axis=(1, 2))), (6, 5, 2)),
        Case("linen-relu-then-mean-hw", lambda: Head(lambda x: jnp.mean(nn.relu(x), axis=(1, 2))), (6, 5, 2)),
        Case("linen-mean-hw-keepdims", lambda: Head(lambda x: jnp.mean(x, axis=(1, 2), keepdims=True)), (6, 5, 2)),
        Case("linen-x.mean-hw", lambda: Head(lambda x: x.mean((1, 2))), (6, 5, 2)),
        Case("linen-max-hw", lambda: Head(lambda x: jnp.max(x, axis=(1, 2))), (6, 5, 2)),
        Case("linen-max-hw-keepdims", lambda: Head(lambda x: jnp.max(x, axis=(1, 2), keepdims=True)), (6, 5, 2)),
        Case("linen-min-hw", lambda: Head(lambda x: jnp.min(x, axis=(1, 2))), (6, 5, 2)),
        Case("linen-sum-hw", lambda: Head(lambda x: jnp.sum(x, axis=(1, 2))), (6, 5, 2)),
        Case("linen-mean-length", lambda: Head(lambda x: jnp.mean(x, axis=1)), (7, 3)),
        Case("linen-max-length-keepdims", lambda: Head(lambda x: jnp.max(x, axis=1, keepdims=True)), (7, 3)),
        Case("linen-mean-dhw", lambda: Head(lambda x: jnp.mean(x, axis=(1, 2, 3))), (3, 4, 3, 2)),
        Case("linen-max-dhw-keepdims", lambda: Head(lambda x: jnp.max(x, axis=(1, 2, 3), keepdims=True)), (3, 4, 3, 2)),
        Case("linen-max-of-relu-hw", lambda: Head(lambda x: jnp.max(nn.relu(x), axis=(1, 2))), (6, 5, 2)),
        Case("linen-mean-of-relu-hw", lambda: Head(lambda x: jnp.mean(nn.relu(x), axis=(1, 2))), (6, 5, 2)),
        Case("linen-max-of-relu-length", lambda: Head(lambda x: nn.relu(x).max(axis=1)), (9, 3)),
        Case("nnx-mean-hw", lambda: NnxHead(lambda x: x.mean(axis=(1, 2))), (5, 5, 2)),
        Case("nnx-max-hw", lambda: NnxHead(lambda x: x.max(axis=(1, 2))), (5, 5, 2)),
    )


CASES = _cases
