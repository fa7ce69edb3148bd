"""Identify a pending function by value and add the layers that compute it.

The graph builder calls :func:`materialize` when a :class:`Pending` function is
needed as a tensor. In order: an ``a x + b`` with constant arrays
(``constants.materialize_affine``); a function that changes the shape of a
padding or length input (attention bias, sequence mask); a reduction
(``reduce.materialize_reduction``); the identity; a catalogued function; a
fitted leaky_relu, elu(alpha) or ``a x + b``; a normalisation or softmax on any axis
(``norms.normalization``); else the expression is compiled from its operations
(``expression.compile_expression``), which refuses an operation with no exact layer.
"""
from __future__ import annotations

import numpy as np

from topology.layers.attention_mask import padding_bias
from topology.ops.catalog import CATALOG, close, fit_parametric, probes
from topology.ops.expression import compile_expression
from topology.ops.norms import normalization
from topology.ops.constants import materialize_affine
from topology.ops.reduce import materialize_reduction
from topology.ops.sequence_mask import length_mask
from topology.trace_kit.builder import Builder
from topology.trace_kit.errors import unsupported
from topology.trace_kit.values import Pending, Tensor


def materialize(builder: Builder, pending: Pending) -> Tensor:
    """Identify ``pending`` and add the layers that compute it.

    Example:
        >>> relu = materialize(builder, Pending(x, lambda r: np.maximum(r, 0), x.shape, x.dtype))   # doctest: +SKIP
    """
    if getattr(pending, "array_constants", False):
        return materialize_affine(builder, pending)
    if tuple(pending.shape) != tuple(pending.root.shape):  # e.g. an attention bias from a padding input
        bias = padding_bias(builder, pending) or length_mask(builder, pending)
        if bias is not None:
            return bias
    xs = probes(pending.root.shape, pending.root.dtype)
    y = np.asarray(pending.fn(xs[0]), dtype=np.float64)
    if y.shape != tuple(pending.root.shape):
        return materialize_reduction(builder, pending, xs[0], y)
    y = np.stack([y] + [np.asarray(pending.fn(x), dtype=np.float64) for x in xs[1:]])
    x64 = np.stack(xs).astype(np.float64)
    if close(y, x64):
        return pending.root
    for function in CATALOG:
        with np.errstate(all="ignore"):
            if close(y, function.reference(x64)):
                return function.emit(builder, pending.root)
    fitted = fit_parametric(builder, pending.root, x64, y)
    if fitted is not None:
        return fitted
    normalized = normalization(builder, pending)
    if normalized is not None:
        return normalized
    compiled = compile_expression(builder, pending)
    if compiled is not None:
        return compiled
    raise unsupported("an element-wise function that is no catalogued activation (" + ", ".join(
        f.name for f in CATALOG) + " on the last axis, leaky_relu, elu(alpha), a x + b), no normalisation or "
        "softmax on one axis, and whose operations are not recorded", pending.where,
        "write it with +, -, *, maximum/minimum, tanh, sigmoid, or a Flax/jax.nn function")
