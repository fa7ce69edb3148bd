"""Window reductions -> MaxPooling / AveragePooling (+ ZeroPadding2D).

Flax's ``avg_pool`` is ``reduce_window_sum`` followed by a division: by the
window size (``count_include_pad=True``, the default: padded cells count, so
tfjs gets explicit zero padding and a VALID pool) or by the per-position count
of real cells (``count_include_pad=False``: tfjs' own SAME pooling). The sum
is kept as a :class:`WindowSum` until its division shows which one it is; a
sum used as it is (``nn.pool`` with ``lax.add``) is that average pool times the
window size. ``nn.min_pool`` is -max_pool(-x). tfjs has only ZeroPadding2D, so
1-D and 3-D padding go through Reshapes around it (:func:`zero_pad`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from topology.layers.base import Case
from topology.ops import handles
from topology.trace_kit.errors import unsupported
from topology.trace_kit.builder import Builder, Deferred
from topology.trace_kit.values import Const, Pending, Tensor


@dataclass(eq=False)
class WindowSum(Deferred):
    """``reduce_window_sum`` of a tensor, waiting for its division."""

    source: Tensor
    params: dict
    shape: tuple[int, ...]
    where: str

    @property
    def window_size(self) -> int:
        return math.prod(self.params["window_dimensions"])

    def as_pending(self, builder: Builder) -> Pending:
        """Sum pooling = average pooling (padded cells counted) times the window size."""
        average = _average_pool(builder, self, include_pad=True)
        size = float(self.window_size)
        return Pending(average, lambda r: r * np.float32(size), self.shape, np.dtype("float32"), self.where)

    def finish(self, builder: Builder, eqn: Any, values: list, where: str) -> Tensor | None:
        """``window_sum / divisor``: an average pool when the divisor is the window size or the cell count."""
        first = values[0]
        divisor = values[1] if len(values) == 2 else None
        if eqn.primitive.name != "div" or first is not self or not isinstance(divisor, Const) or not divisor.known:
            return None
        value = np.asarray(divisor.value, dtype=np.float64)
        if value.size == 1 and float(value.reshape(())) == self.window_size:
            return _average_pool(builder, self, include_pad=True)
        if value.shape == self.shape or value.size > 1:
            counts = _cell_counts(self)
            if np.broadcast_to(value, self.shape).shape == self.shape and np.allclose(np.broadcast_to(value, self.shape), counts):
                return _average_pool(builder, self, include_pad=False)
        return None


def _spatial(params: dict, key: str) -> tuple:
    return tuple(params[key][1:-1])


def _check_window(params: dict, ndim: int, where: str) -> None:
    dims, strides = params["window_dimensions"], params["window_strides"]
    if dims[0] != 1 or dims[-1] != 1 or strides[0] != 1 or strides[-1] != 1:
        raise unsupported("pooling over the batch or channel axis", where, "pool over spatial axes only (NHWC)")
    if any(d != 1 for d in params.get("base_dilation", ())) or any(d != 1 for d in params.get("window_dilation", ())):
        raise unsupported("dilated pooling", where, "use undilated windows")
    if not 1 <= ndim - 2 <= 3:
        raise unsupported(f"pooling over {ndim - 2} spatial axes", where, "pool over 1 to 3 spatial axes")


def same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """The (low, high) padding of SAME for one axis, as XLA and tfjs compute it.

    Example:
        >>> same_padding(28, 3, 1), same_padding(7, 2, 2)
        ((1, 1), (0, 1))
    """
    total = max((math.ceil(size / stride) - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def _padding_kind(params: dict, in_shape: tuple[int, ...]) -> str:
    pads = [tuple(p) for p in params["padding"][1:-1]]
    if all(p == (0, 0) for p in pads):
        return "valid"
    same = [same_padding(n, k, s) for n, k, s in zip(in_shape[1:-1], _spatial(params, "window_dimensions"),
                                                      _spatial(params, "window_strides"))]
    return "same" if pads == same else "explicit"


def _pool_config(params: dict, padding: str) -> dict:
    return {"pool_size": list(_spatial(params, "window_dimensions")), "padding": padding,
            "strides": list(_spatial(params, "window_strides")), "data_format": "channels_last"}


@handles("reduce_window_max")
def max_pool(builder: Builder, eqn: Any, values: list, where: str) -> Tensor:
    x = builder.tensor(values[0], where)
    _check_window(eqn.params, len(x.shape), where)
    padding = _padding_kind(eqn.params, x.shape)
    if padding == "explicit":
        x, padding = _max_pool_padding(builder, x, eqn.params, where), "valid"
    n = len(x.shape) - 2
    return builder.add_layer("max_pool", f"MaxPooling{n}D", _pool_config(eqn.params, padding), [x],
                             tuple(eqn.outvars[0].aval.shape))


# Layers whose output is >= 0 whatever their input, and layers that keep a non-negative input so.
_NON_NEGATIVE = {"Activation": ("relu", "relu6", "sigmoid", "softmax", "softplus", "hard_sigmoid")}
_KEEPS_SIGN = ("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "ZeroPadding2D", "Reshape", "Flatten", "Permute",
               "Cropping2D", "Dropout", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D")


def non_negative(builder: Builder, x: Tensor) -> bool:
    """True when ``x`` is provably >= 0 everywhere: a ReLU (or relu6, sigmoid, softmax) output, possibly
    reshaped, pooled or padded since.

    Example:
        >>> non_negative(builder, relu_output)   # doctest: +SKIP
        True
    """
    layers = {layer.name: layer for layer in builder.layers}
    layer = layers.get(x.layer)
    while layer is not None and layer.class_name in _KEEPS_SIGN and len(layer.inputs) == 1:
        layer = layers.get(layer.inputs[0])
    if layer is None:
        return False
    config = layer.config
    if layer.class_name == "ReLU":
        return not config.get("negative_slope") and float(config.get("threshold") or 0.0) >= 0.0
    return config.get("activation") in _NON_NEGATIVE.get(layer.class_name, ())


def _max_pool_padding(builder: Builder, x: Tensor, params: dict, where: str) -> Tensor:
    """Explicit max-pool padding as ZeroPadding: exact when x >= 0 and every window keeps a real cell
    (Flax pads with -inf, so a padded cell never wins; a zero never beats a non-negative cell either)."""
    pads = [tuple(p) for p in params["padding"][1:-1]]
    windows = _spatial(params, "window_dimensions")
    if any(lo < 0 or hi < 0 for lo, hi in pads) or any(max(lo, hi) >= k for (lo, hi), k in zip(pads, windows)):
        raise unsupported(f"max pooling with padding {pads} for windows {windows}", where,
                          "pad by less than the window, or use padding='SAME' or 'VALID'")
    if not non_negative(builder, x):
        raise unsupported("max pooling with explicit padding of values that may be negative", where,
                          "tfjs pads with zeros, exact only for inputs >= 0: pool after a ReLU, "
                          "or use padding='SAME' or 'VALID'")
    return zero_pad(builder, x, pads)


@handles("reduce_window_min")
def min_pool(builder: Builder, eqn: Any, values: list, where: str) -> Tensor:
    """``nn.min_pool`` = -max_pool(-x) (exact: negation only flips the sign bit)."""
    x = builder.tensor(values[0], where)
    negated = builder.add_layer("negate", "Rescaling", {"scale": -1.0, "offset": 0.0}, [x], x.shape)
    pooled = max_pool(builder, eqn, [negated], where)
    return builder.add_layer("min_pool", "Rescaling", {"scale": -1.0, "offset": 0.0}, [pooled], pooled.shape)


@handles("reduce_window_sum")
def window_sum(builder: Builder, eqn: Any, values: list, where: str) -> WindowSum:
    x = builder.tensor(values[0], where)
    _check_window(eqn.params, len(x.shape), where)
    return WindowSum(x, dict(eqn.params), tuple(eqn.outvars[0].aval.shape), where)


def _cell_counts(window: WindowSum) -> np.ndarray:
    import jax

    ones = np.ones(window.source.shape, np.float32)
    params = window.params
    return np.asarray(jax.lax.reduce_window(ones, 0.0, jax.lax.add, params["window_dimensions"],
                                            params["window_strides"], params["padding"]))


def _average_pool(builder: Builder, window: WindowSum, include_pad: bool) -> Tensor:
    x, params = window.source, window.params
    n = len(x.shape) - 2
    padding = _padding_kind(params, x.shape)
    if padding == "valid":
        return builder.add_layer("avg_pool", f"AveragePooling{n}D", _pool_config(params, "valid"), [x], window.shape)
    if not include_pad and padding == "same":
        return builder.add_layer("avg_pool", f"AveragePooling{n}D", _pool_config(params, "same"), [x], window.shape)
    if not include_pad:
        raise unsupported("average pooling over explicit padding without padded cells", window.where,
                          "use padding='SAME' or 'VALID'")
    pads = [tuple(p) for p in params["padding"][1:-1]]
    padded = zero_pad(builder, x, pads)
    return builder.add_layer("avg_pool", f"AveragePooling{n}D", _pool_config(params, "valid"), [padded], window.shape)


def zero_pad(builder: Builder, x: Tensor, pads: list[tuple[int, int]]) -> Tensor:
    """Zero-pad the spatial axes of a channels-last tensor with 1-3 spatial axes.

    tfjs has only ZeroPadding2D, so 1-D and 3-D inputs are reshaped around it
    (reshapes keep the row-major order, so the zeros land where Flax puts them).

    Example:
        >>> zero_pad(builder, x, [(1, 1), (0, 1)])   # doctest: +SKIP
    """
    batch, sizes, channels = x.shape[0], list(x.shape[1:-1]), x.shape[-1]
    out = [d + lo + hi for d, (lo, hi) in zip(sizes, pads)]

    def reshape(t: Tensor, shape: list[int]) -> Tensor:
        return builder.add_layer("reshape", "Reshape", {"target_shape": shape}, [t], (batch, *shape))

    def pad2d(t: Tensor, two: list[tuple[int, int]], shape: list[int]) -> Tensor:
        return builder.add_layer("zero_padding", "ZeroPadding2D",
                                 {"padding": [list(p) for p in two], "data_format": "channels_last"}, [t], (batch, *shape))

    if len(sizes) == 2:
        return pad2d(x, pads, [*out, channels])
    if len(sizes) == 1:
        padded = pad2d(reshape(x, [sizes[0], 1, channels]), [pads[0], (0, 0)], [out[0], 1, channels])
        return reshape(padded, [out[0], channels])
    # 3-D: pad (D, H) of (D, H, W*C), then W of (D'*H', W, C).
    first = pad2d(reshape(x, [sizes[0], sizes[1], sizes[2] * channels]), pads[:2],
                  [out[0], out[1], sizes[2] * channels])
    second = pad2d(reshape(first, [out[0] * out[1], sizes[2], channels]), [(0, 0), pads[2]],
                   [out[0] * out[1], out[2], channels])
    return reshape(second, [*out, channels])


def _cases():
    """Average (both count_include_pad), max, min and sum pooling in 1-3 D, Linen and NNX."""
    import flax.linen as nn
    import jax
    from flax import nnx
    from flax.linen.pooling import min_pool as linen_min_pool

    class Pool(nn.Module):
        fn: Any

        @nn.compact
        def __call__(self, x):
            return self.fn(x)

    class ConvPool(nn.Module):  # pooling a layer's output, then a layer
        fn: Any

        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(self.fn(nn.Conv(4, (3, 3))(x)))

    class NnxPool(nnx.Module):
        def __init__(self, fn: Any):
            self.fn = fn
            self.conv = nnx.Conv(2, 4, (3, 3), rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.fn(self.conv(x))

    def sum_pool(x, window, strides=None, padding="VALID"):
        return nn.pool(x, 0.0, jax.lax.add, window, strides, padding)

    cases = {
        "avg2d-valid": (lambda x: nn.avg_pool(x, (2, 2), strides=(2, 2)), (8, 8, 3)),
        "avg2d-valid-odd-stride": (lambda x: nn.avg_pool(x, (3, 2), strides=(2, 1)), (9, 7, 2)),
        "avg2d-same-include-pad": (lambda x: nn.avg_pool(x, (3, 3), padding="SAME"), (6, 6, 2)),
        "avg2d-same-stride2-include-pad": (lambda x: nn.avg_pool(x, (3, 3), strides=(2, 2), padding="SAME"), (7, 7, 2)),
        "avg2d-same-exclude-pad": (lambda x: nn.avg_pool(x, (3, 3), padding="SAME", count_include_pad=False), (6, 6, 2)),
        "avg2d-same-stride2-exclude-pad": (lambda x: nn.avg_pool(x, (3, 3), strides=(2, 2), padding="SAME",
                                                                 count_include_pad=False), (7, 7, 2)),
        "avg2d-explicit-include-pad": (lambda x: nn.avg_pool(x, (2, 2), padding=((1, 0), (1, 2))), (5, 5, 2)),
        "max2d-valid": (lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), (8, 8, 3)),
        "max2d-same": (lambda x: nn.max_pool(x, (3, 3), padding="SAME"), (6, 6, 2)),
        "max2d-same-stride2": (lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME"), (7, 7, 2)),
        "min2d-valid": (lambda x: linen_min_pool(x, (2, 2), strides=(2, 2)), (6, 6, 2)),
        "sum2d-valid": (lambda x: sum_pool(x, (2, 2), (2, 2)), (6, 6, 2)),
        "sum2d-same": (lambda x: sum_pool(x, (3, 3), None, "SAME"), (5, 5, 2)),
        "avg1d-valid": (lambda x: nn.avg_pool(x, (2,), strides=(2,)), (10, 3)),
        "avg1d-same-include-pad": (lambda x: nn.avg_pool(x, (3,), padding="SAME"), (9, 3)),
        "avg1d-same-exclude-pad": (lambda x: nn.avg_pool(x, (3,), strides=(2,), padding="SAME",
                                                         count_include_pad=False), (9, 3)),
        "max1d-valid": (lambda x: nn.max_pool(x, (3,), strides=(2,)), (11, 3)),
        "max1d-same": (lambda x: nn.max_pool(x, (2,), strides=(2,), padding="SAME"), (9, 3)),
        "avg3d-valid": (lambda x: nn.avg_pool(x, (2, 2, 2), strides=(2, 2, 2)), (4, 4, 6, 2)),
        "avg3d-same-include-pad": (lambda x: nn.avg_pool(x, (3, 2, 3), padding="SAME"), (4, 3, 5, 2)),
        "avg3d-same-exclude-pad": (lambda x: nn.avg_pool(x, (2, 2, 2), strides=(2, 2, 2), padding="SAME",
                                                         count_include_pad=False), (3, 4, 5, 2)),
        "max3d-valid": (lambda x: nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2)), (4, 4, 4, 2)),
        "max3d-same": (lambda x: nn.max_pool(x, (2, 3, 2), strides=(2, 2, 1), padding="SAME"), (3, 5, 4, 2)),
    }
    result = [Case(f"linen-{name}", lambda fn=fn: Pool(fn), shape) for name, (fn, shape) in cases.items()]
    result += [
        Case("linen-conv-avg-same-dense", lambda: ConvPool(lambda x: nn.avg_pool(x, (3, 3), (2, 2), "SAME")), (7, 7, 2)),
        Case("linen-conv-max-valid-dense", lambda: ConvPool(lambda x: nn.max_pool(x, (2, 2), (2, 2))), (8, 8, 2)),
        Case("nnx-avg-pool-valid", lambda: NnxPool(lambda x: nnx.avg_pool(x, (2, 2), strides=(2, 2))), (8, 8, 2)),
        Case("nnx-max-pool-same", lambda: NnxPool(lambda x: nnx.max_pool(x, (3, 3), padding="SAME")), (6, 6, 2)),
        # The ResNet stem (HF FlaxResNet): relu, then a 3x3 stride-2 max pool with padding 1.
        Case("linen-resnet-stem-max-pool-pad1", lambda: ConvPool(lambda x: nn.max_pool(
            nn.relu(x), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))), (8, 8, 2)),
        Case("linen-max1d-explicit-after-relu", lambda: Pool(lambda x: nn.max_pool(
            nn.relu(x), (3,), strides=(2,), padding=((1, 2),))), (7, 3)),
        Case("nnx-resnet-stem-max-pool-pad1", lambda: NnxPool(lambda x: nnx.max_pool(
            nnx.relu(x), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))), (8, 8, 2)),
    ]
    return tuple(result)


CASES = _cases
