"""Normalisations and softmax written out in jnp, recognised by value: RMSNorm, LayerNorm, softmax on any axis.

Llama and Gemma write RMSNorm as ``x * rsqrt(mean(x**2, -1) + eps)`` (or ``x / sqrt(...)``),
BEiT-style code writes ``(x - mean) / sqrt(var + eps)``, ResNeSt takes a softmax over the
radix axis. The element-wise handler composes such a chain into one pending function of x;
here it is compared with the normalisation over the last axis for an epsilon solved from the
function itself (on inputs scaled so that mean(x^2) meets epsilon, so that it is exact where it
matters), and with softmax over every non-batch axis. A match becomes the same layers as the
Flax layer would: RMSNorm composed as for ``nn.RMSNorm`` (``layers/layernorm.py``),
LayerNormalization without scale and centre, or Softmax(axis). A following ``* w`` or
``* (1 + w)`` with a per-channel parameter is the constants' per-channel BatchNormalization.
Exact like the Flax layers: the same formula, float32 rounding differences only.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from topology.layers.base import Case, layer_base
from topology.layers.layernorm import layer_norm_config, rms_norm_nodes
from topology.ops.catalog import close, probes
from topology.trace_kit.builder import Builder
from topology.trace_kit.values import Pending, Tensor

SCALES = tuple(10.0 ** k for k in range(-5, 2))  # input magnitudes at which epsilon is solved and checked


def _rms(x: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def _layer_norm(x: np.ndarray, eps: float) -> np.ndarray:
    centred = x - np.mean(x, axis=-1, keepdims=True)
    return centred / np.sqrt(np.mean(centred * centred, axis=-1, keepdims=True) + eps)


def _spread(x: np.ndarray, kind: str) -> np.ndarray:
    centred = x - np.mean(x, axis=-1, keepdims=True) if kind == "layer_norm" else x
    return np.mean(centred * centred, axis=-1, keepdims=True), centred


def solve_epsilon(fn: Any, shape: tuple[int, ...], kind: str) -> float | None:
    """The epsilon with ``fn`` = the normalisation ``kind`` ("rms" or "layer_norm") over the last axis, or None.

    Example:
        >>> solve_epsilon(lambda x: _rms(x.astype(np.float64), 1e-6).astype(np.float32), (2, 8), "rms")
        1e-06
    """
    if len(shape) < 2 or shape[-1] < 2:
        return None
    reference = _rms if kind == "rms" else _layer_norm
    base = probes(shape)[0].astype(np.float64)
    estimates = []
    with np.errstate(all="ignore"):
        for scale in SCALES:
            x = (base * scale).astype(np.float32)
            y = np.asarray(fn(x), np.float64)
            if y.shape != tuple(shape) or not np.all(np.isfinite(y)):
                return None
            spread, centred = _spread(x.astype(np.float64), kind)
            usable = np.abs(y) > 1e-2
            if not usable.any():
                return None
            eps = np.median(((centred / np.where(usable, y, 1.0)) ** 2 - spread)[usable])
            estimates.append((abs(np.log(max(float(np.median(spread)), 1e-30) / max(abs(eps), 1e-30))), eps))
        estimate = float(np.float32(max(min(estimates)[1], 0.0)))
        # the estimate carries float32 noise (1.0000001e-06): the shortest decimal that fits as well is written
        candidates = [float(f"{estimate:.{digits}g}") for digits in (1, 2, 3)] + [estimate]
        for eps in candidates:
            if all(np.allclose(np.asarray(fn(x), np.float64), reference(x.astype(np.float64), eps),
                               rtol=1e-4, atol=1e-5)
                   for x in ((base * scale).astype(np.float32) for scale in SCALES)):
                return eps
    return None


def normalization(builder: Builder, pending: Pending) -> Tensor | None:
    """``pending`` as RMSNorm or LayerNorm (no affine) over the last axis, or softmax over one axis; None if neither.

    Example:
        A pending ``x * rsqrt(mean(x**2, -1) + 1e-6)`` becomes one RMSNorm:

        >>> rms = normalization(builder, pending)   # doctest: +SKIP
    """
    root, shape = pending.root, tuple(pending.root.shape)
    if root.dtype.kind != "f" or tuple(pending.shape) != shape:
        return None
    softmax = _softmax_axis(pending)
    if softmax is not None:
        return _softmax_layers(builder, root, softmax)
    eps = solve_epsilon(pending.fn, shape, "rms")
    if eps is not None:
        name = builder.unique("rms_norm")
        nodes = rms_norm_nodes(name, shape, (len(shape) - 1,), {"epsilon": eps, "_use_scale": False}, [root.layer], {},
                               f"rms_norm {pending.where}".strip())
        return builder.add_nodes(nodes, shape)
    eps = solve_epsilon(pending.fn, shape, "layer_norm") if len(shape) <= 4 else None
    if eps is not None:
        return builder.add_layer("layer_norm", "LayerNormalization", layer_norm_config(-1, eps, False, False), [root],
                                 shape)
    return None


def _softmax_axis(pending: Pending) -> int | None:
    shape = tuple(pending.root.shape)
    xs = [x.astype(np.float64) for x in probes(shape)[:3]]
    ys = [np.asarray(pending.fn(x.astype(np.float32)), np.float64) for x in xs]
    for axis in range(1, len(shape)):
        if shape[axis] < 2:
            continue
        with np.errstate(all="ignore"):
            if all(close(y, _softmax(x, axis)) for x, y in zip(xs, ys)):
                return axis - len(shape) if axis == len(shape) - 1 else axis
    return None


def _softmax_layers(builder: Builder, root: Tensor, axis: int) -> Tensor:
    """Softmax over ``axis``; tfjs 4.22 computes it on the last axis only, so another axis is swapped
    to the end and back (Permute moves values, exactly)."""
    shape = tuple(root.shape)
    if axis < 0:
        return builder.add_layer("softmax", "Softmax", layer_base(axis=-1), [root], shape)
    dims = list(range(1, len(shape)))
    dims[axis - 1], dims[-1] = dims[-1], dims[axis - 1]
    swapped = tuple([shape[0], *(shape[d] for d in dims)])
    moved = builder.add_layer("softmax_permute", "Permute", layer_base(dims=dims), [root], swapped)
    normalized = builder.add_layer("softmax", "Softmax", layer_base(axis=-1), [moved], swapped)
    return builder.add_layer("softmax_permute", "Permute", layer_base(dims=dims), [normalized], shape)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _cases():
    """Llama/Gemma RMSNorm, a jnp LayerNorm and softmax over a middle axis; Linen and NNX."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class LlamaRMSNorm(nn.Module):  # transformers' FlaxLlamaRMSNorm
        gemma: bool = False

        @nn.compact
        def __call__(self, x):
            h = nn.Dense(6)(x)
            variance = jnp.power(h.astype(jnp.float32), 2).mean(-1, keepdims=True)
            h = h / jnp.sqrt(variance + 1e-6)
            weight = self.param("weight", nn.initializers.ones, (6,))
            return nn.Dense(3)(h * (1 + weight) if self.gemma else weight * h)

    class RsqrtRMSNorm(nn.Module):  # x * rsqrt(mean(x**2) + eps) * w, the Llama paper's form
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(6)(x)
            h = h * jax.lax.rsqrt(jnp.mean(h**2, axis=-1, keepdims=True) + 1e-5)
            return h * self.param("scale", nn.initializers.ones, (6,))

    class HandLayerNorm(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(5)(x)
            mean = h.mean(-1, keepdims=True)
            var = ((h - mean) ** 2).mean(-1, keepdims=True)
            return nn.Dense(2)((h - mean) / jnp.sqrt(var + 1e-5))

    class SplitSoftmax(nn.Module):  # ResNeSt split attention: softmax over the radix axis
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4)(x)
            return nn.Dense(3)(jax.nn.softmax(h, axis=1))

    class NnxRMSNorm(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.linear = nnx.Linear(4, 6, rngs=rngs)
            self.weight = nnx.Param(jnp.ones(6))

        def __call__(self, x):
            h = self.linear(x)
            return self.weight.value * (h * jax.lax.rsqrt(jnp.mean(jnp.square(h), -1, keepdims=True) + 1e-6))

    return (
        Case("linen-llama-rmsnorm-3d", LlamaRMSNorm, (3, 4)),
        Case("linen-gemma-rmsnorm-1-plus-w", lambda: LlamaRMSNorm(gemma=True), (3, 4)),
        Case("linen-rsqrt-rmsnorm", RsqrtRMSNorm, (4,)),
        Case("linen-jnp-layernorm", HandLayerNorm, (3, 4)),
        Case("linen-softmax-axis1", SplitSoftmax, (2, 4)),
        Case("nnx-rsqrt-rmsnorm", lambda: NnxRMSNorm(nnx.Rngs(0)), (4,)),
    )


CASES = _cases
