"""Sequence masks from a per-example length input -> exact tfjs layers.

``jnp.arange(L) < lengths[:, None]`` (sst2's padding mask) is a function of a
(batch,) int input that changes the shape, so the element-wise catalog cannot
name it. Identified by value on integer probes, ``a * [j < lengths] + b`` becomes::

    Reshape(1) -> Rescaling (cast) -> Dense(L, kernel 1, bias -j) -> ReLU(max 1) [-> Rescaling(a, b)]

``min(max(lengths - j, 0), 1)`` is exactly 1 where ``j < lengths`` and 0 elsewhere
for integer lengths (float32 holds every integer up to 2**24 exactly).
"""
from __future__ import annotations


import numpy as np

from topology.graph import WeightBinding
from topology.layers.dense import dense_config
from topology.trace_kit.builder import Builder
from topology.trace_kit.values import Pending, Tensor


def length_mask(builder: Builder, pending: Pending) -> Tensor | None:
    """The layers computing ``pending`` when it is a length mask of a (batch,) input; else None.

    Example:
        >>> length_mask(builder, pending)   # doctest: +SKIP
    """
    root, out = pending.root, tuple(pending.shape)
    if int(np.prod(root.shape[1:], dtype=np.int64)) != 1 or len(out) < 2 or out[0] != root.shape[0]:
        return None
    sizes = [d for d in out[1:] if d != 1]
    if len(sizes) != 1:
        return None
    batch, length = root.shape[0], sizes[0]

    def evaluate(lengths: np.ndarray) -> np.ndarray | None:
        try:
            y = np.asarray(pending.fn(lengths.reshape(root.shape).astype(root.dtype)), dtype=np.float64)
        except Exception:  # noqa: BLE001 - not a function we can probe this way
            return None
        return y.reshape(batch, length) if y.size == batch * length else None

    steps = np.arange(length)
    rng = np.random.RandomState(0)
    probes = [np.full(batch, length), np.zeros(batch, int)] + [rng.randint(0, length + 2, batch) for _ in range(6)]
    full, empty = evaluate(probes[0]), evaluate(probes[1])
    if full is None or empty is None or np.ptp(full) or np.ptp(empty) or full.flat[0] == empty.flat[0]:
        return None
    low, high = float(empty.flat[0]), float(full.flat[0])
    for lengths in probes[2:]:
        y = evaluate(lengths)
        if y is None or not np.array_equal(y, low + (high - low) * (steps[None, :] < lengths[:, None])):
            return None
    x = root
    if len(root.shape) != 2:
        x = builder.add_layer("lengths", "Reshape", {"target_shape": [1]}, [x], (batch, 1), dtype=root.dtype)
    x = builder.add_layer("lengths_float", "Rescaling", {"scale": 1.0, "offset": 0.0}, [x], (batch, 1))
    weights = [WeightBinding("kernel", (1, length), constant=np.ones((1, length), np.float32)),
               WeightBinding("bias", (length,), constant=-steps.astype(np.float32))]
    x = builder.add_layer("positions_left", "Dense", dense_config(length), [x], (batch, length), weights)
    x = builder.add_layer("length_mask", "ReLU", {"max_value": 1.0, "negative_slope": 0.0, "threshold": 0.0},
                          [x], (batch, length))
    if (low, high) != (0.0, 1.0):
        x = builder.add_layer("length_mask_scaled", "Rescaling", {"scale": high - low, "offset": low}, [x],
                              (batch, length))
    if out != (batch, length):
        x = builder.add_layer("length_mask_shape", "Reshape", {"target_shape": list(out[1:])}, [x], out)
    return x
