"""Element-wise expressions no catalogued function matches, compiled operation by operation.

The catalogue (``ops/catalog.py``) and the normalisations (``ops/norms.py``) recognise a whole
pending function by value and fuse it into one known layer. Anything else that an element-wise
handler composed (CLIP's quick_gelu ``x * sigmoid(1.702 * x)``, ``x * x``, ``tanh(x) + x``,
``abs(x)``...) is compiled here from the operations it was written with (``Pending.expr``):
every operand is first identified on its own (so ``1.702 * x`` is a Rescaling and
``jax.nn.gelu(x)`` inside a larger expression is still one GELU), then each operation becomes the
TF.js built-in that computes it exactly:

====================  =======================================================================
operation             layers (exact: the same float32 operation)
====================  =======================================================================
a + b, a * b          Add / Multiply of two tensors; Rescaling(1, c) / Rescaling(c, 0) with a number c
a - b, -a             Add of Rescaling(-1) (tfjs has no Subtract); c - a is Rescaling(-1, c)
a / c                 Rescaling(1 / c): within one rounding of JAX (exact for powers of two)
max, min, clamp       Maximum / Minimum (with a constant tensor for a number; ReLU for max(a, 0))
tanh, logistic        Activation tanh / sigmoid
a ** n, square        Multiply of n copies (n = 2..4)
abs                   ReLU(a) + ReLU(-a)
a != c, a == c        integer a (token ids): ReLU(max 1) of (a - c)^2, and 1 minus it; exact below 2**24
====================  =======================================================================

An operation with no exact TF.js equivalent on activations (``exp``, ``log``, ``sqrt``, ``rsqrt``,
``erf``, division by a tensor, a comparison of float activations used as a value, ...) is refused naming the
operation and the user's line; inside a recognised function (softplus, GELU, RMSNorm, ...) the
same operations are fine, because the function as a whole has a layer.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from topology.layers.base import Case
from topology.trace_kit.builder import Builder
from topology.trace_kit.errors import unsupported
from topology.trace_kit.values import Const, Pending, Tensor

IDENTITY = ("copy", "copy_p", "stop_gradient", "reduce_precision")
_ACTIVATIONS = {"tanh": "tanh", "logistic": "sigmoid"}
_MERGE = {"add": "Add", "mul": "Multiply", "max": "Maximum", "min": "Minimum"}


def compile_expression(builder: Builder, pending: Pending) -> Tensor | None:
    """The layers computing ``pending`` from its operations; None when it records none.

    Example:
        >>> quick_gelu = compile_expression(builder, pending)   # doctest: +SKIP
    """
    if pending.expr is None:
        return None
    name, params, operands = pending.expr
    shape = tuple(pending.shape)
    if shape != tuple(pending.root.shape):
        return None
    values = [_operand(builder, value, pending.where) for value in operands]
    return _operation(builder, name, params, values, pending, shape)


def _operand(builder: Builder, value: Any, where: str) -> Tensor | float | Const:
    """A tensor (identified on its own), a number, or a constant array."""
    if isinstance(value, (Tensor, Pending)):
        return builder.tensor(value, where)
    if value.known and np.size(value.value) >= 1 and np.all(np.asarray(value.value) == np.asarray(value.value).flat[0]):
        return float(np.asarray(value.value).flat[0])
    return value


def _operation(builder: Builder, name: str, params: dict, values: list, pending: Pending,
               shape: tuple[int, ...]) -> Tensor:
    where = pending.where
    tensors = [v for v in values if isinstance(v, Tensor)]
    numbers = [v for v in values if isinstance(v, float)]
    if any(isinstance(v, Const) for v in values) or any(t.shape != shape for t in tensors):
        raise unsupported(f"`{name}` of activations with a constant array or a broadcast operand", where,
                          "combine activations with numbers, or with tensors of the same shape")
    x = tensors[0]
    rescale = lambda t, scale, offset: builder.add_layer(  # noqa: E731
        "rescaling", "Rescaling", {"scale": float(np.float32(scale)), "offset": float(np.float32(offset))}, [t], shape)
    if name in IDENTITY or (name == "convert_element_type" and np.dtype(params["new_dtype"]).kind == "f"):
        return x
    if name == "convert_element_type" and x.dtype.kind in "iub" and np.dtype(params["new_dtype"]).kind in "iub":
        return x  # integer values (ids, a 0/1 mask) held exactly in float32 stay what they are
    if name in ("ne", "eq") and len(numbers) == 1 and x.dtype.kind in "iub":
        # Integer x: d = x - c, then min(d * d, 1) is 0 where x == c and 1 elsewhere (d * d >= 1 for
        # any nonzero integer d, however it rounds). Exact for |x|, |c| < 2**24.
        difference = rescale(x, 1.0, -numbers[0])
        square = builder.add_layer("compare_square", "Multiply", {}, [difference, difference], shape)
        differs = builder.add_layer("compare", "ReLU", {"max_value": 1.0, "negative_slope": 0.0, "threshold": 0.0},
                                    [square], shape, dtype=np.int32)
        if name == "ne":
            return differs
        return builder.add_layer("rescaling", "Rescaling", {"scale": -1.0, "offset": 1.0}, [differs], shape,
                                 dtype=np.int32)
    if name == "neg":
        return rescale(x, -1.0, 0.0)
    if name in _ACTIVATIONS:
        return builder.add_layer(_ACTIVATIONS[name], "Activation", {"activation": _ACTIVATIONS[name]}, [x], shape)
    if name in ("add", "mul", "sub") and len(tensors) == 2:
        if name == "sub":
            tensors = [tensors[0], rescale(tensors[1], -1.0, 0.0)]
        return builder.add_layer("subtract" if name == "sub" else name, _MERGE["add" if name == "sub" else name], {},
                                 tensors, shape)
    if name in ("add", "sub", "mul", "div") and len(numbers) == 1:
        c = numbers[0]
        tensor_first = isinstance(values[0], Tensor)
        if name == "add":
            return rescale(x, 1.0, c)
        if name == "mul":
            return rescale(x, c, 0.0)
        if name == "sub":
            return rescale(x, 1.0, -c) if tensor_first else rescale(x, -1.0, c)
        if tensor_first and c != 0:
            return rescale(x, 1.0 / c, 0.0)
    if name in ("max", "min"):
        if len(tensors) == 2:
            return builder.add_layer(name + "imum", _MERGE[name], {}, tensors, shape)
        if name == "max" and numbers == [0.0]:
            return builder.add_layer("relu", "ReLU", {"max_value": None, "negative_slope": 0.0, "threshold": 0.0},
                                     [x], shape)
        bound = builder.constant_tensor(Const(np.full(shape, numbers[0], np.float32)), x, where)
        return builder.add_layer(name + "imum", _MERGE[name], {}, [x, bound], shape)
    if name == "clamp" and len(numbers) == 2 and isinstance(values[1], Tensor):
        low = _operation(builder, "max", {}, [x, numbers[0]], pending, shape)
        return _operation(builder, "min", {}, [low, numbers[1]], pending, shape)
    power = params.get("y") if name == "integer_pow" else 2 if name == "square" else None
    if name == "pow" and numbers and isinstance(values[0], Tensor) and float(numbers[0]).is_integer():
        power = int(numbers[0])
    if power is not None and 1 <= power <= 4:
        return x if power == 1 else builder.add_layer("power", "Multiply", {}, [x] * power, shape)
    if name == "abs":
        relu = {"max_value": None, "negative_slope": 0.0, "threshold": 0.0}
        positive = builder.add_layer("abs_positive", "ReLU", relu, [x], shape)
        negative = builder.add_layer("abs_negative", "ReLU", relu, [rescale(x, -1.0, 0.0)], shape)
        return builder.add_layer("abs", "Add", {}, [positive, negative], shape)
    raise unsupported(f"element-wise operation `{name}` on {'two activations' if len(tensors) > 1 else 'activations'}",
                      where,
                      "write it with +, -, *, division by a number, maximum/minimum, tanh, sigmoid or integer "
                      "powers, or use a Flax/jax.nn function that has a layer (see docs/supported-layers.md)")


def _cases():
    """CLIP quick_gelu, products and sums of activations of one tensor, clamp, a known function inside an
    expression; Linen and NNX."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class After(nn.Module):  # fn(Dense(x))
        fn: Any

        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(self.fn(nn.Dense(5)(x)))

    class NnxAfter(nnx.Module):
        def __init__(self, fn: Any):
            self.fn = fn
            self.linear = nnx.Linear(4, 5, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.fn(self.linear(x))

    functions = {
        "quick-gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
        "square-plus-abs-tanh": lambda x: x * x + jnp.abs(jnp.tanh(x)),
        "cube-minus-x": lambda x: x**3 - x,
        "max-with-number": lambda x: jnp.maximum(x, 0.3) - x / 4,
        "clip": lambda x: jnp.clip(x, -0.5, 0.7),
        "gelu-times-sigmoid": lambda x: jax.nn.gelu(x) * jax.nn.sigmoid(x),
    }
    cases = [Case(f"linen-{name}", lambda fn=fn: After(fn), (4,), input_range=(-3.0, 3.0))
             for name, fn in functions.items()]
    return (
        *cases,
        Case("nnx-quick-gelu", lambda: NnxAfter(functions["quick-gelu"]), (4,), input_range=(-3.0, 3.0)),
    )


CASES = _cases
