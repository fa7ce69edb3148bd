"""Element-wise and row-wise functions between layers, identified by value.

Element-wise operations on one tensor (and scalar constants) are composed into
a :class:`Pending` function. When a tensor is needed, the function is
identified by value against the catalog (``topology/ops/catalog.py``, done by
``topology/ops/materialize.py``). So ``jax.nn.relu``, ``nn.relu``,
``jnp.maximum(x, 0)`` and ``x * (x > 0)`` all become the same layer. Two
different tensors combined become merge layers (:func:`merge`); constant
arrays and parameters go to :func:`topology.ops.constants.with_constants`; a
window sum divided by its window (``avg_pool``) is finished by its
:class:`Deferred` value.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from topology.layers.base import Case
from topology.ops import handles
from topology.ops.constants import with_constants
from topology.trace_kit.errors import unsupported
from topology.trace_kit.builder import Builder, Deferred
from topology.trace_kit.values import Const, Pending, Tensor, as_function, root_of

# Operations that keep a value a function of the same root tensor.
ELEMENTWISE = (
    "add", "sub", "mul", "div", "max", "min", "neg", "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic",
    "erf", "erfc", "integer_pow", "pow", "sqrt", "rsqrt", "abs", "sign", "select_n", "ge", "gt", "lt", "le", "eq",
    "ne", "clamp", "convert_element_type", "copy", "copy_p", "square", "stop_gradient", "and", "or", "not",
    "reduce_max", "reduce_min", "reduce_sum", "broadcast_in_dim", "is_finite", "nextafter", "floor", "ceil", "round",
    "sin", "cos", "atan2", "cbrt", "reduce_precision", "tan",
)


@handles(*ELEMENTWISE)
def elementwise(builder: Builder, eqn: Any, values: list, where: str) -> Any:
    deferred = next((v for v in values if isinstance(v, Deferred)), None)
    if deferred is not None:  # e.g. a window sum: an average pool when divided by its window
        finished = deferred.finish(builder, eqn, values, where)
        if finished is not None:
            return finished
        values = [v.as_pending(builder) if isinstance(v, Deferred) else v for v in values]
    result, values = with_constants(builder, eqn, values, where)  # constant arrays and parameters
    if result is not None:
        return result
    roots = {id(root_of(v)): root_of(v) for v in values if isinstance(v, (Tensor, Pending))}
    if len(roots) > 1:
        return merge(builder, eqn, values, where)
    if any(isinstance(v, Const) and not v.known for v in values):
        raise unsupported(f"`{eqn.primitive.name}` of activations with a parameter outside a known layer", where,
                          "move the parameter into a layer (e.g. nn.Dense, nn.BatchNorm), or fold it into one")
    root = next(iter(roots.values()))
    parts = [as_function(v) for v in values]
    primitive, params = eqn.primitive, eqn.params

    def fn(r: Any) -> Any:
        return primitive.bind(*[part(r) for part in parts], **params)

    out = eqn.outvars[0].aval
    pending = Pending(root, fn, tuple(out.shape), np.dtype(out.dtype), where)
    pending.expr = (eqn.primitive.name, dict(params), list(values))  # for topology.ops.expression
    return pending


_LAYER = {"add": "Add", "mul": "Multiply", "max": "Maximum", "min": "Minimum"}


def merge(builder: Builder, eqn: Any, values: list, where: str) -> Tensor:
    """Two or more different tensors combined element-wise: Add/Multiply/Maximum/Minimum; ``sub``
    (tfjs has no Subtract layer) is Add of the first and Rescaling(-1) of the second. Sizes of 1
    broadcast (a squeeze-and-excitation gate (batch, 1, 1, C)), as in JAX and the tfjs merge layers."""
    name = eqn.primitive.name
    if name not in _LAYER and name != "sub":
        raise unsupported(f"`{name}` of two different tensors", where,
                          "combine tensors with +, -, *, maximum, minimum or concatenate")
    tensors = [builder.tensor(v, where) for v in values]
    shape = tuple(eqn.outvars[0].aval.shape)
    if len(tensors) != len(values) or not all(_broadcasts(t.shape, shape) for t in tensors):
        raise unsupported(f"`{name}` of tensors with shapes {[t.shape for t in tensors]} (broadcasting)", where,
                          "combine tensors of the same rank whose sizes are equal or 1 (batch sizes equal)")
    # Integers combined (RoBERTa's position count times its mask) stay integer-valued: the layers compute
    # them in float32, exactly below 2**24, and later element-wise steps are probed with integers.
    out_dtype = np.dtype(eqn.outvars[0].aval.dtype)
    dtype = out_dtype if out_dtype.kind in "iu" and all(t.dtype.kind in "iub" for t in tensors) else np.float32
    if name == "sub":
        negated = builder.add_layer("negate", "Rescaling", {"scale": -1.0, "offset": 0.0}, [tensors[1]], shape,
                                    dtype=dtype)
        return builder.add_layer("subtract", "Add", {}, [tensors[0], negated], shape, dtype=dtype)
    return builder.add_layer(_LAYER[name].lower(), _LAYER[name], {}, tensors, shape, dtype=dtype)


def _broadcasts(shape: tuple[int, ...], out: tuple[int, ...]) -> bool:
    """Same rank, same batch, every other size equal or 1: tfjs merge layers broadcast exactly that.

    Example:
        >>> _broadcasts((2, 1, 1, 4), (2, 5, 5, 4)), _broadcasts((1, 4), (2, 4))
        (True, False)
    """
    return len(shape) == len(out) and shape[0] == out[0] and all(a in (1, b) for a, b in zip(shape[1:], out[1:]))


def _cases():
    """Every catalogued function and the parametric ones, after a layer and on a raw input, Linen and NNX."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class After(nn.Module):  # fn(Dense(x)): the function's root is a layer output
        fn: Any

        @nn.compact
        def __call__(self, x):
            return self.fn(nn.Dense(6)(x))

    class Before(nn.Module):  # Dense(fn(x)): the function's root is the model input
        fn: Any

        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(self.fn(x))

    class NnxAfter(nnx.Module):
        def __init__(self, fn: Any):
            self.fn = fn
            self.linear = nnx.Linear(5, 6, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.fn(self.linear(x))

    wide = (-6.0, 6.0)  # covers the kinks of relu6, hard_* and the tails of the saturating functions
    functions = {
        "relu": nn.relu, "relu-jax": jax.nn.relu, "relu-maximum": lambda x: jnp.maximum(x, 0),
        "relu-where": lambda x: jnp.where(x > 0, x, 0.0), "relu6": nn.relu6, "elu": nn.elu,
        "elu-alpha0.5": lambda x: nn.elu(x, alpha=0.5), "selu": nn.selu, "sigmoid": nn.sigmoid, "tanh": jnp.tanh,
        "softplus": nn.softplus, "softsign": nn.soft_sign, "silu": nn.silu, "swish": nn.swish,
        "gelu-exact": lambda x: jax.nn.gelu(x, approximate=False), "gelu-tanh": jax.nn.gelu,
        "hard-sigmoid": nn.hard_sigmoid, "hard-tanh": nn.hard_tanh, "hard-silu": nn.hard_silu,
        "log-sigmoid": nn.log_sigmoid, "softmax": nn.softmax, "log-softmax": nn.log_softmax,
        "leaky-relu-default": nn.leaky_relu, "leaky-relu-0.2": lambda x: nn.leaky_relu(x, 0.2),
        "mish": jax.nn.mish, "affine-2x+1": lambda x: x * 2 + 1,
    }
    cases = [Case(f"linen-{name}", lambda fn=fn: After(fn), (5,), input_range=wide) for name, fn in functions.items()]
    cases += [
        Case("linen-relu-on-input", lambda: Before(nn.relu), (5,), input_range=wide),
        Case("linen-gelu-tanh-on-input", lambda: Before(jax.nn.gelu), (5,), input_range=wide),
        Case("linen-softmax-on-input-3d", lambda: Before(nn.softmax), (4, 5)),
        Case("linen-swish-narrow-range", lambda: After(nn.swish), (5,)),
        Case("nnx-relu", lambda: NnxAfter(nnx.relu), (5,), input_range=wide),
        Case("nnx-gelu-tanh", lambda: NnxAfter(nnx.gelu), (5,), input_range=wide),
        Case("nnx-leaky-relu-0.2", lambda: NnxAfter(lambda x: nnx.leaky_relu(x, 0.2)), (5,), input_range=wide),
        Case("nnx-log-softmax", lambda: NnxAfter(nnx.log_softmax), (5,), input_range=wide),
    ]
    return tuple(cases)


CASES = _cases
