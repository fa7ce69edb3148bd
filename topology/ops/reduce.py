"""Reductions over spatial axes -> GlobalAverage/GlobalMax pooling (+ Reshape for keepdims)."""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from topology.trace.values import Pending, Tensor

_GLOBAL = {"mean": "GlobalAveragePooling{n}D", "max": "GlobalMaxPooling{n}D"}


def materialize_reduction(builder: Any, pending: Pending, x: np.ndarray, y: np.ndarray) -> Tensor:
    """Identify a pending function whose shape differs from its input's: mean/max over axes."""
    from topology.trace.build import unsupported

    root = pending.root
    rank = len(root.shape)
    x64 = x.astype(np.float64)
    for count in range(1, rank - 1):
        for axes in itertools.combinations(range(1, rank), count):
            for name, reduce in (("mean", np.mean), ("max", np.max)):
                for keepdims in (False, True):
                    expected = reduce(x64, axis=axes, keepdims=keepdims)
                    if expected.shape == y.shape and np.allclose(y, expected, rtol=1e-5, atol=1e-6):
                        return _emit(builder, root, name, axes, keepdims, tuple(y.shape), pending.where)
    if y.size == x.size and y.shape[0] == x.shape[0]:
        from topology.ops.activations import _close

        if _close(y.reshape(x.shape), x64):
            return builder.add_layer("reshape", "Reshape", {"target_shape": list(y.shape[1:])}, [root], tuple(y.shape))
    raise unsupported(f"a reduction from {root.shape} to {tuple(y.shape)}", pending.where,
                      "supported: mean or max over all spatial axes (global pooling)")


def _emit(builder: Any, root: Tensor, name: str, axes: tuple, keepdims: bool, shape: tuple, where: str) -> Tensor:
    from topology.trace.build import unsupported

    spatial = tuple(range(1, len(root.shape) - 1))
    if axes != spatial or not 1 <= len(spatial) <= 2:
        raise unsupported(f"{name} over axes {axes} of a {len(root.shape)}-D tensor", where,
                          "supported: mean/max over all spatial axes of a 3-D or 4-D (channels-last) tensor")
    class_name = _GLOBAL[name].format(n=len(spatial))
    config = {"data_format": "channels_last"} if len(spatial) == 2 else {}
    pooled_shape = (root.shape[0], root.shape[-1])
    pooled = builder.add_layer(f"global_{name}", class_name, config, [root], pooled_shape)
    if keepdims:
        return builder.add_layer("reshape", "Reshape", {"target_shape": list(shape[1:])}, [pooled], shape)
    return pooled
