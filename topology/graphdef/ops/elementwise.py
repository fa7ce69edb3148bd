"""Element-wise math, comparisons, select, casts: one TF op each (TF broadcasting does the rest).

These handlers take their inputs un-broadcast (``broadcasts = True``): a ``broadcast_in_dim``
feeding them stays a cheap reshape and TF.js broadcasts, as JAX's own fused kernels do.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from topology.graphdef.nodes import GraphBuilder, Value, attr_type, is_static, tf_dtype
from topology.graphdef.ops import GraphCase, handles
from topology.trace.build import source_of
from topology.vocabulary.errors import ConversionError

UNARY = {"neg": "Neg", "exp": "Exp", "log": "Log", "log1p": "Log1p", "expm1": "Expm1", "tanh": "Tanh",
         "logistic": "Sigmoid", "sin": "Sin", "cos": "Cos", "tan": "Tan", "sqrt": "Sqrt", "rsqrt": "Rsqrt",
         "abs": "Abs", "sign": "Sign", "floor": "Floor", "ceil": "Ceil", "erf": "Erf", "is_finite": "IsFinite",
         "square": "Square", "asin": "Asin", "acos": "Acos", "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh",
         "asinh": "Asinh", "acosh": "Acosh", "atanh": "Atanh"}
BINARY = {"add": "AddV2", "sub": "Sub", "mul": "Mul", "max": "Maximum", "min": "Minimum", "pow": "Pow",
          "atan2": "Atan2", "eq": "Equal", "ne": "NotEqual", "lt": "Less", "le": "LessEqual", "gt": "Greater",
          "ge": "GreaterEqual"}
LOGICAL = {"and": "LogicalAnd", "or": "LogicalOr", "xor": "NotEqual", "not": "LogicalNot"}


def broadcast_shape(*shapes: tuple) -> tuple:
    """NumPy broadcasting of shapes that may hold the symbolic batch.

    Example:
        >>> broadcast_shape((2, 1, 4), (3, 1))
        (2, 3, 4)
    """
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0]
        big = [d for d in dims if not (is_static(d) and d == 1)]
        out.append(big[0] if big else 1)
    return tuple(out)


def _out_dtype(eqn: Any) -> np.dtype:
    return np.dtype(tf_dtype(eqn.outvars[0].aval.dtype))


def _binary(g: GraphBuilder, op: str, a: Value, b: Value, dtype: Any) -> Value:
    return g.op(op, [a, b], {"T": attr_type(a.dtype)}, broadcast_shape(a.shape, b.shape), dtype)


def _unary_handler(eqn: Any, g: GraphBuilder, values: list[Value]) -> Value:
    (x,) = values
    name = eqn.primitive.name
    if name == "not":
        if x.dtype != np.dtype(bool):
            raise g_unsupported(eqn, "bitwise not of integers")
        return g.op("LogicalNot", [x], {}, x.shape, bool)
    if name == "round" and int(eqn.params.get("rounding_method", 0)) == 0:  # lax.round's default: half away from zero
        half = g.op("AddV2", [g.op("Abs", [x], {}, x.shape, x.dtype), g.const(np.float32(0.5))], {}, x.shape, x.dtype)
        return _binary(g, "Mul", g.op("Sign", [x], {}, x.shape, x.dtype), g.op("Floor", [half], {}, x.shape, x.dtype),
                       x.dtype)
    if name == "round":
        return g.op("Round", [x], {"T": attr_type(x.dtype)}, x.shape, x.dtype)
    if name == "erfc":
        return _binary(g, "Sub", g.const(np.float32(1)), g.op("Erf", [x], {}, x.shape, x.dtype), x.dtype)
    if name == "exp2":
        return _binary(g, "Pow", g.const(np.float32(2)), x, x.dtype)
    return g.op(UNARY[name], [x], {"T": attr_type(x.dtype)}, x.shape, _out_dtype(eqn))


def g_unsupported(eqn: Any, what: str) -> Exception:
    """GRAPH_UNSUPPORTED_PRIMITIVE naming the primitive, ``what`` of it, and the user's line."""
    where = source_of(eqn)
    return ConversionError("GRAPH_UNSUPPORTED_PRIMITIVE",
                           f"{eqn.primitive.name}: {what} has no TF.js graph form" + (f" (at {where})" if where else ""),
                           "see docs/graph-model.md for what converts")


@handles(*UNARY, "not", "round", "exp2", "erfc")
def unary(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    return _unary_handler(eqn, g, values)


@handles(*BINARY)
def binary(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    a, b = values
    return _binary(g, BINARY[eqn.primitive.name], a, b, _out_dtype(eqn))


@handles("and", "or", "xor")
def logical(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    a, b = values
    if a.dtype != np.dtype(bool):
        raise g_unsupported(eqn, "bitwise arithmetic on integers")
    return _binary(g, LOGICAL[eqn.primitive.name], a, b, bool)


def _trunc_div(g: GraphBuilder, a: Value, b: Value) -> Value:
    # JAX's integer division truncates toward zero; float division then a cast (which truncates)
    # is exact for the magnitudes int32 ids and positions have (below 2**24).
    q = _binary(g, "RealDiv", g.cast(a, "float32"), g.cast(b, "float32"), "float32")
    return g.cast(q, "int32")


@handles("div")
def div(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    a, b = values
    if a.dtype.kind == "f":
        return _binary(g, "RealDiv", a, b, a.dtype)
    return _trunc_div(g, a, b)


@handles("rem")
def rem(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    a, b = values
    if a.dtype.kind == "f":  # C fmod: the result takes the dividend's sign
        q = _binary(g, "RealDiv", a, b, a.dtype)
        trunc = _binary(g, "Mul", g.op("Sign", [q], {}, q.shape, q.dtype),
                        g.op("Floor", [g.op("Abs", [q], {}, q.shape, q.dtype)], {}, q.shape, q.dtype), q.dtype)
    else:
        trunc = _trunc_div(g, a, b)
    return _binary(g, "Sub", a, _binary(g, "Mul", trunc, b, a.dtype), a.dtype)


@handles("integer_pow")
def integer_pow(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    (x,) = values
    y = int(eqn.params["y"])
    if y == 0:
        return g.const(np.ones((1,) * x.rank, x.dtype))
    result, base, n = None, x, abs(y)
    while n:  # square-and-multiply, the order XLA uses
        if n & 1:
            result = base if result is None else _binary(g, "Mul", result, base, x.dtype)
        n >>= 1
        if n:
            base = g.op("Square", [base], {"T": attr_type(x.dtype)}, base.shape, x.dtype)
    if y < 0:
        result = g.op("Reciprocal", [result], {"T": attr_type(x.dtype)}, x.shape, x.dtype)
    return result


@handles("select_n")
def select_n(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    which, *cases = values
    if len(cases) == 1:
        return cases[0]
    if len(cases) != 2:
        raise g_unsupported(eqn, f"select_n over {len(cases)} cases")
    if which.dtype != np.dtype(bool):
        which = g.cast(which, bool)
    shape = broadcast_shape(which.shape, cases[0].shape, cases[1].shape)
    return g.op("SelectV2", [which, cases[1], cases[0]], {"T": attr_type(cases[0].dtype)}, shape, cases[0].dtype)


@handles("convert_element_type")
def convert_element_type(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    return g.cast(values[0], eqn.params["new_dtype"])


@handles("clamp")
def clamp(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    low, x, high = values
    return _binary(g, "Minimum", _binary(g, "Maximum", x, low, x.dtype), high, x.dtype)


for _handler in (unary, binary, logical, div, rem, integer_pow, select_n, convert_element_type, clamp):
    _handler.broadcasts = True  # type: ignore[attr-defined]

F, I = "float32", "int32"
CASES = [
    GraphCase("unary_math", lambda x: jnp.tanh(x) + jnp.exp(-x) * jnp.sin(x) - jnp.cos(x) + jnp.abs(x) ** 0.5
              + jnp.floor(x) + jnp.ceil(x) + jnp.sign(x) + jnp.round(x), [((3, 4), F)],
              ("tanh", "exp", "neg", "sin", "cos", "abs", "sqrt", "floor", "ceil", "sign", "round", "pow")),
    GraphCase("logs", lambda x: jnp.log(jnp.abs(x) + 1) + jnp.log1p(jnp.abs(x)) + jnp.expm1(x)
              + jax.lax.rsqrt(jnp.abs(x) + 0.5) + jnp.square(x), [((5,), F)], ("log", "log1p", "expm1", "rsqrt", "square")),
    GraphCase("activations", lambda x: jax.nn.gelu(x, approximate=False) + jax.nn.sigmoid(x) + jax.nn.silu(x)
              + jax.nn.relu(x) + jax.nn.softplus(x) + jax.nn.gelu(x), [((2, 6), F)],
              ("erf", "logistic", "max", "custom_jvp_call")),
    GraphCase("compare_select", lambda x, y: jnp.where(x > y, x, y * 2) + jnp.where(x <= 0.1, 1.0, 0.0)
              + (x == y) + jnp.where((x < 0) & (y >= 0) | ~(x != y), 3.0, -1.0), [((4,), F), ((4,), F)],
              ("gt", "le", "eq", "lt", "ge", "ne", "and", "or", "not", "select_n")),
    GraphCase("broadcast_arith", lambda x, y: (x[:, :, None] - y[:, None, :]) / (1 + jnp.abs(y[:, None, :]))
              + jnp.maximum(x, 0.5)[:, :, None] * jnp.minimum(y, -0.5)[:, None, :], [((3,), F), ((4,), F)],
              ("sub", "div", "mul", "max", "min", "broadcast_in_dim")),
    GraphCase("integer_pow_clamp", lambda x: x ** 2 + x ** 3 - x ** 5 / 10 + 1 / (x ** 2 + 1) + jnp.clip(x, -0.3, 0.4)
              + jax.lax.clamp(-0.1, x, 0.2), [((2, 3), F)], ("integer_pow", "clamp")),
    GraphCase("int_arith", lambda i: ((i * 3 + 7) // 2 - (i % 3) + jnp.maximum(i, 2) + (-i) // 2 + (-i) % 3)
              .astype(jnp.float32), [((6,), I)], ("mul", "add", "div", "rem", "convert_element_type"),
              int_range=(-9, 9)),
    GraphCase("casts", lambda x: (x > 0).astype(jnp.float32) + x.astype(jnp.int32).astype(jnp.float32)
              + jax.lax.stop_gradient(x), [((7,), F)], ("convert_element_type", "stop_gradient")),
]
