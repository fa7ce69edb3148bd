"""Window reductions -> MaxPooling / AveragePooling (+ ZeroPadding2D).

Flax's ``avg_pool`` is ``reduce_window_sum`` followed by a division: by the
window size (``count_include_pad=True``, the default: padded cells count, so
tfjs gets explicit zero padding and a VALID pool) or by the per-position count
of real cells (``count_include_pad=False``: tfjs' own SAME pooling). The sum
is kept as a :class:`WindowSum` until its division shows which one it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from topology.ops import handles
from topology.trace.values import Const, Pending, Tensor


@dataclass(eq=False)
class WindowSum:
    """``reduce_window_sum`` of a tensor, waiting for its division."""

    source: Tensor
    params: dict
    shape: tuple[int, ...]
    where: str

    @property
    def window_size(self) -> int:
        return math.prod(self.params["window_dimensions"])

    def as_pending(self, builder: Any) -> Pending:
        """Sum pooling = average pooling (padded cells counted) times the window size."""
        average = _average_pool(builder, self, include_pad=True)
        size = float(self.window_size)
        return Pending(average, lambda r: r * np.float32(size), self.shape, np.dtype("float32"), self.where)


def _spatial(params: dict, key: str) -> tuple:
    return tuple(params[key][1:-1])


def _check_window(params: dict, ndim: int, where: str) -> None:
    from topology.trace.build import unsupported

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
def max_pool(builder: Any, eqn: Any, values: list, where: str) -> Tensor:
    from topology.trace.build import unsupported

    x = builder.tensor(values[0], where)
    _check_window(eqn.params, len(x.shape), where)
    padding = _padding_kind(eqn.params, x.shape)
    if padding == "explicit":
        raise unsupported("max pooling with explicit padding", where, "use padding='SAME' or 'VALID'")
    n = len(x.shape) - 2
    return builder.add_layer("max_pool", f"MaxPooling{n}D", _pool_config(eqn.params, padding), [x],
                             tuple(eqn.outvars[0].aval.shape))


@handles("reduce_window_sum")
def window_sum(builder: Any, eqn: Any, values: list, where: str) -> WindowSum:
    x = builder.tensor(values[0], where)
    _check_window(eqn.params, len(x.shape), where)
    return WindowSum(x, dict(eqn.params), tuple(eqn.outvars[0].aval.shape), where)


def finish_window_sum(builder: Any, eqn: Any, values: list, where: str) -> Any:
    """``window_sum / divisor``: an average pool when the divisor is the window size or the cell count."""
    from topology.ops.activations import elementwise

    first = values[0]
    divisor = values[1] if len(values) == 2 else None
    if eqn.primitive.name == "div" and isinstance(first, WindowSum) and isinstance(divisor, Const) and divisor.known:
        value = np.asarray(divisor.value, dtype=np.float64)
        if value.size == 1 and float(value.reshape(())) == first.window_size:
            return _average_pool(builder, first, include_pad=True)
        if value.shape == first.shape or value.size > 1:
            counts = _cell_counts(first)
            if np.broadcast_to(value, first.shape).shape == first.shape and np.allclose(np.broadcast_to(value, first.shape), counts):
                return _average_pool(builder, first, include_pad=False)
    pending = [v.as_pending(builder) if isinstance(v, WindowSum) else v for v in values]
    return elementwise(builder, eqn, pending, where)


def _cell_counts(window: WindowSum) -> np.ndarray:
    import jax

    ones = np.ones(window.source.shape, np.float32)
    params = window.params
    return np.asarray(jax.lax.reduce_window(ones, 0.0, jax.lax.add, params["window_dimensions"],
                                            params["window_strides"], params["padding"]))


def _average_pool(builder: Any, window: WindowSum, include_pad: bool) -> Tensor:
    from topology.trace.build import unsupported

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
    if n != 2:
        raise unsupported(f"average pooling over padded cells in {n}-D", window.where,
                          "tfjs has ZeroPadding2D only: use padding='VALID', or count_include_pad=False")
    pads = [list(p) for p in params["padding"][1:-1]]
    padded_shape = (x.shape[0], *(d + lo + hi for d, (lo, hi) in zip(x.shape[1:-1], pads)), x.shape[-1])
    padded = builder.add_layer("zero_padding", "ZeroPadding2D", {"padding": pads, "data_format": "channels_last"},
                               [x], padded_shape)
    return builder.add_layer("avg_pool", "AveragePooling2D", _pool_config(params, "valid"), [padded], window.shape)
