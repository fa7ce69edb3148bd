"""One position along an axis chosen by a per-example length input -> a one-hot and a ``Dot``.

``jnp.take_along_axis(h, idx, axis=1)`` with ``idx`` a function of a (batch,) int input that is
the same across the other axes (sst2 picks the state at ``lengths - 1``) is identified by value on
integer probes as ``idx = lengths + c`` (JAX wraps a negative index by L, so ``lengths = 0`` with
``c = -1`` picks position L-1 as in JAX). It becomes::

    Reshape(1) -> Rescaling (cast) -> Dense(4L, kernel 1, biases) -> ReLU(max 1) -> Dense(L, +-1)   one-hot (B, L)
    Dot(axes (1, 1)) of the one-hot with h (B, L, D...)                                          -> (B, D...)

``[d == 0] = min(max(d + 1, 0), 1) - min(max(d, 0), 1)`` for an integer ``d``, so the one-hot is exact
(float32 holds every integer up to 2**24), and the Dot sums one ``1 * h`` and ``0 * h`` terms: exact
while h is finite (``0 * inf`` would be NaN). An index outside [-L, L) gives a NaN row, as JAX's
default fill mode does (``1 - sum(one-hot)`` scaled to inf, then ``inf - inf``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from topology.graph import WeightBinding
from topology.layers.base import Case
from topology.layers.dense import dense_config
from topology.ops import handles
from topology.trace_kit.builder import Builder
from topology.trace_kit.errors import unsupported
from topology.trace_kit.values import Pending, Tensor

_HINT = "pick one position per example with an index computed from a (batch,) integer input, e.g. lengths - 1"


@handles("gather")
def gather(builder: Builder, eqn: Any, values: list, where: str) -> Tensor:
    """``take_along_axis`` of one position per example, chosen by a (batch,) integer input.

    Example:
        >>> last = gather(builder, eqn, [h, index_of_lengths], "model.py:10")   # doctest: +SKIP
    """
    h, index = builder.tensor(values[0], where), values[1]
    dims = eqn.params["dimension_numbers"]
    what = "a gather (take_along_axis) whose indices are not one position per example from a (batch,) input"
    rank = len(h.shape)
    if (not isinstance(index, Pending) or int(np.prod(index.root.shape[1:], dtype=np.int64)) != 1
            or index.root.dtype.kind not in "iu" or len(dims.collapsed_slice_dims) != 1 or dims.offset_dims
            or tuple(dims.start_index_map) != tuple(dims.collapsed_slice_dims)):
        raise unsupported(what, where, _HINT)
    axis = int(dims.collapsed_slice_dims[0])
    others = tuple(d for d in range(rank) if d != axis)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    if (axis == 0 or tuple(dims.operand_batching_dims) != others
            or tuple(dims.start_indices_batching_dims) != others
            or tuple(eqn.params["slice_sizes"]) != (1,) * rank or out_shape[axis] != 1):
        raise unsupported(what, where, _HINT)
    batch, length = h.shape[0], h.shape[axis]
    offset = _offset(index, length)
    if offset is None:
        raise unsupported(what, where, _HINT)
    x = index.root
    if len(x.shape) != 2:
        x = builder.add_layer("position", "Reshape", {"target_shape": [1]}, [x], (batch, 1), dtype=x.dtype)
    x = builder.add_layer("position_float", "Rescaling", {"scale": 1.0, "offset": 0.0}, [x], (batch, 1))
    steps = np.arange(length, dtype=np.float32)
    d = offset - steps  # index - j; wrapped: index + L - j
    bias = np.concatenate([d + 1, d, d + length + 1, d + length]).astype(np.float32)
    x = builder.add_layer("position_steps", "Dense", dense_config(4 * length), [x], (batch, 4 * length),
                          [WeightBinding("kernel", (1, 4 * length), constant=np.ones((1, 4 * length), np.float32)),
                           WeightBinding("bias", (4 * length,), constant=bias)])
    x = builder.add_layer("position_clip", "ReLU", {"max_value": 1.0, "negative_slope": 0.0, "threshold": 0.0},
                          [x], (batch, 4 * length))
    eye = np.eye(length, dtype=np.float32)
    combine = np.concatenate([eye, -eye, eye, -eye])
    onehot = builder.add_layer("position_onehot", "Dense", dense_config(length, use_bias=False), [x],
                               (batch, length), [WeightBinding("kernel", (4 * length, length), constant=combine)])
    # JAX fills an out-of-range position with NaN: r = 1 - sum(one-hot) is 1 only then; r * 1e38 * 1e38
    # is 0 or inf (no 0 * inf), and s + (-s) is 0 or NaN, added to every one-hot entry (NaN spreads in the Dot).
    outside = np.repeat(-combine.sum(axis=1, keepdims=True), length, axis=1).astype(np.float32)
    r = builder.add_layer("position_outside", "Dense", dense_config(length), [x], (batch, length),
                          [WeightBinding("kernel", (4 * length, length), constant=outside),
                           WeightBinding("bias", (length,), constant=np.ones(length, np.float32))])
    for _ in range(2):  # a ReLU (identity on 0 and 1) before each scale keeps the optimizer from folding it
        r = builder.add_layer("position_outside_keep", "ReLU", {"max_value": None, "negative_slope": 0.0,
                                                                "threshold": 0.0}, [r], (batch, length))
        r = builder.add_layer("position_outside_inf", "Rescaling", {"scale": 1e38, "offset": 0.0}, [r],
                              (batch, length))
    negative = builder.add_layer("position_outside_neg", "Rescaling", {"scale": -1.0, "offset": 0.0}, [r],
                                 (batch, length))
    fill = builder.add_layer("position_outside_nan", "Add", {}, [r, negative], (batch, length))
    onehot = builder.add_layer("position_onehot_or_nan", "Add", {}, [onehot, fill], (batch, length))
    if axis != 1:
        raise unsupported(what + f" on axis {axis} (only axis 1)", where, "move the picked axis to axis 1 first")
    picked = (batch, *h.shape[2:])
    out = builder.add_layer("pick", "Dot", {"axes": [1, 1], "normalize": False}, [onehot, h], picked)
    return builder.add_layer("pick_shape", "Reshape", {"target_shape": list(out_shape[1:])}, [out], out_shape)


def _offset(index: Pending, length: int) -> int | None:
    """``c`` when ``index`` is ``wrap(lengths + c)`` broadcast over the other axes, else None."""
    root = index.root
    batch = root.shape[0]
    rng = np.random.RandomState(0)
    probes = [np.zeros(batch, int), np.full(batch, length)] + [rng.randint(-length, 2 * length, batch) for _ in range(6)]
    seen = []
    for lengths in probes:
        try:
            y = np.asarray(index.fn(lengths.reshape(root.shape).astype(root.dtype)))
        except Exception:  # noqa: BLE001 - not a function we can probe this way
            return None
        if y.ndim == 0 or y.shape[0] != batch or y.size % batch:
            return None
        rows = y.reshape(batch, -1)
        if np.ptp(rows, axis=1).any():
            return None
        seen.append((lengths, rows[:, 0]))
    for offset in range(-2 * length, 2 * length + 1):
        if all(np.array_equal(got, np.where(lengths + offset < 0, lengths + offset + length, lengths + offset))
               for lengths, got in seen):
            return offset
    return None


def _cases():
    """sst2's last state: ``take_along_axis(h, lengths - 1)`` over the sequence axis (lengths 1..L, and
    0, which JAX wraps to L-1); Linen and NNX."""
    import flax.linen as nn
    import jax.numpy as jnp
    from flax import nnx

    def last(h, lengths):
        idx = (lengths - 1)[:, None, None]
        return jnp.take_along_axis(h, jnp.broadcast_to(idx, (h.shape[0], 1, h.shape[2])), axis=1)[:, 0]

    class Pick(nn.Module):
        @nn.compact
        def __call__(self, tokens, lengths):
            return nn.Dense(2)(last(nn.Dense(4)(nn.Embed(7, 4)(tokens)), lengths))

    class NnxPick(nnx.Module):
        def __init__(self):
            self.embed = nnx.Embed(7, 3, rngs=nnx.Rngs(0))
            self.linear = nnx.Linear(3, 4, rngs=nnx.Rngs(1))

        def __call__(self, tokens, lengths):
            return last(self.linear(self.embed(tokens)), lengths)

    ints = dict(input_dtype="int32", input_range=(0, 7))
    return (
        Case("linen-take-along-axis-last-state", Pick, [(6,), ()], **ints),
        Case("nnx-take-along-axis-last-state", NnxPick, [(6,), ()], **ints),
    )


CASES = _cases
