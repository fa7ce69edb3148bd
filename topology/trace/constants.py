"""Values that do not depend on the model's inputs, while the jaxpr is walked: known constants are
folded (the operation is evaluated), and parameters used outside a layer stay lazy (a :class:`Lazy`
says how to compute them from the checkpoint, only when a layer's weights are written).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from topology.trace_kit.values import Const, Lazy
from topology.vocabulary.tensors import TensorRef

# Operations that keep a per-channel vector per channel (when the other operands are numbers).
_CHANNELWISE = ("add", "sub", "mul", "div", "neg", "rsqrt", "sqrt", "convert_element_type", "copy", "copy_p", "exp",
                "log", "abs", "integer_pow", "square", "max", "min", "pow", "reshape", "broadcast_in_dim")


def _channels(eqn: Any, values: list[Const], shape: tuple[int, ...]) -> int | None:
    """The vector length when ``eqn`` on per-channel parameters gives a per-channel value."""
    lazies = [v.lazy for v in values if v.lazy is not None]
    sizes = {lazy.channels for lazy in lazies}
    if len(sizes) != 1 or None in sizes or not shape or eqn.primitive.name not in _CHANNELWISE:
        return None
    channels = sizes.pop()
    if shape[-1] != channels or any(np.size(v.value) != 1 for v in values if v.known):
        return None
    if eqn.primitive.name == "broadcast_in_dim":
        dims = eqn.params["broadcast_dimensions"]
        return channels if dims and dims[-1] == len(shape) - 1 and math.prod(lazies[0].shape[:-1]) == 1 else None
    if eqn.primitive.name == "reshape":
        return channels if math.prod(shape[:-1]) == 1 else None
    return channels


def param_const(ref: TensorRef | None) -> Const:
    """The traced value of a variable: unknown, but computable from ``ref`` when there is one.

    Example:
        >>> ref = TensorRef(("params", "pe"), (2,), np.dtype("float32"), lambda: np.zeros(2, "float32"))
        >>> param_const(ref).lazy.origin
        'params/pe'
    """
    if ref is None:
        return Const(None)

    def load(ref: TensorRef = ref) -> np.ndarray:
        array = ref.load()
        return np.asarray(array, np.float32) if ref.dtype.kind == "f" or ref.dtype.name == "bfloat16" else array

    shape = tuple(ref.shape)
    channels = shape[-1] if shape and math.prod(shape[:-1]) == 1 and shape[-1] > 1 else None
    return Const(None, Lazy(load, shape, np.dtype(ref.dtype), "/".join(ref.path), channels))


def fold_lazy(eqn: Any, values: list[Const]) -> list[Const] | None:
    """An operation on constants some of which are parameters: lazy results (None when no parameter is involved).

    Example:
        >>> fold_lazy(eqn, [param_const(ref), Const(np.float32(2))])   # doctest: +SKIP
    """
    if not any(v.lazy is not None for v in values):
        return None
    if not all(v.known or v.lazy is not None for v in values):
        return [Const(None)] * len(eqn.outvars)
    primitive, params = eqn.primitive, eqn.params

    def run(index: int) -> np.ndarray:
        args = [v.value if v.known else v.lazy.compute() for v in values]
        result = primitive.bind(*args, **params)
        return np.asarray(result[index] if primitive.multiple_results else result)

    origin = "+".join(dict.fromkeys(v.lazy.origin for v in values if v.lazy is not None))
    return [Const(None, Lazy(lambda i=i: run(i), tuple(out.aval.shape), np.dtype(out.aval.dtype), origin,
                             _channels(eqn, values, tuple(out.aval.shape))))
            for i, out in enumerate(eqn.outvars)]


def fold_constants(eqn: Any, values: list[Const]) -> list[Const]:
    """Evaluate an operation on known constants (e.g. pooling window counts); parameters stay unknown
    (lazy: computed from the checkpoint when needed).

    Example:
        >>> fold_constants(eqn, [Const(np.ones(3)), Const(np.float32(2))])   # doctest: +SKIP
        [Const(value=array([3., 3., 3.]), lazy=None)]
    """
    lazy = fold_lazy(eqn, values)
    if lazy is not None:
        return lazy
    if not all(v.known for v in values):
        return [Const(None)] * len(eqn.outvars)
    try:
        result = eqn.primitive.bind(*[v.value for v in values], **eqn.params)
    except Exception:
        return [Const(None)] * len(eqn.outvars)
    results = result if eqn.primitive.multiple_results else [result]
    return [as_const(r) for r in results]


def as_const(value: Any) -> Const:
    """A constant as numpy; JAX arrays numpy cannot hold (PRNG keys, e.g. nn.RNN's default init key) stay JAX arrays.

    Example:
        >>> as_const([1, 2]).value.tolist()
        [1, 2]
    """
    try:
        return Const(np.asarray(value))
    except TypeError:
        return Const(value)
