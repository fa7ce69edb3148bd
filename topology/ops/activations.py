"""Element-wise and row-wise functions between layers, identified by value.

Element-wise operations on one tensor (and scalar constants) are composed into
a :class:`Pending` function. When a tensor is needed, the function is applied
to a probe input and compared with every entry of :data:`CATALOG`; the match
decides the tfjs layers. So ``jax.nn.relu``, ``nn.relu``, ``jnp.maximum(x, 0)``
and ``x * (x > 0)`` all become the same layer, and a function tfjs lacks
(``jax.nn.gelu``'s tanh approximation, ``hard_sigmoid``) is composed from layers
it has. Each entry is (name, reference function in numpy, emitter).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from topology.ops import handles
from topology.trace.values import Const, Pending, Tensor

# Operations that keep a value a function of the same root tensor.
ELEMENTWISE = (
    "add", "sub", "mul", "div", "max", "min", "neg", "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic",
    "erf", "erfc", "integer_pow", "pow", "sqrt", "rsqrt", "abs", "sign", "select_n", "ge", "gt", "lt", "le", "eq",
    "ne", "clamp", "convert_element_type", "copy", "copy_p", "square", "stop_gradient", "and", "or", "not",
    "reduce_max", "reduce_min", "reduce_sum", "broadcast_in_dim", "is_finite", "nextafter", "floor", "ceil", "round",
    "sin", "cos", "atan2", "cbrt", "reduce_precision", "tan",
)
MERGES = {"add": "Add", "mul": "Multiply", "max": "Maximum", "min": "Minimum", "sub": "Subtract"}
ATOL, RTOL = 1e-6, 1e-5


@dataclass(frozen=True)
class Function:
    """A catalogued function: its reference in numpy and how to build it in tfjs."""

    name: str
    reference: Callable[[np.ndarray], np.ndarray]
    emit: Callable[[Any, Tensor], Tensor]


def _activation(name: str) -> Callable[[Any, Tensor], Tensor]:
    return lambda b, x: b.add_layer(name, "Activation", {"activation": name}, [x], x.shape)


def _relu_capped(cap: float | None, op: str = "relu") -> Callable[[Any, Tensor], Tensor]:
    return lambda b, x: b.add_layer(op, "ReLU", {"max_value": cap, "negative_slope": 0.0, "threshold": 0.0}, [x], x.shape)


def _rescale(b: Any, x: Tensor, scale: float, offset: float) -> Tensor:
    return b.add_layer("rescaling", "Rescaling", {"scale": float(scale), "offset": float(offset)}, [x], x.shape)


def _hard_sigmoid(b: Any, x: Tensor) -> Tensor:  # jax: relu6(x + 3) / 6 (tfjs' hardSigmoid is Keras-2's 0.2x+0.5)
    return _relu_capped(1.0, "hard_sigmoid")(b, _rescale(b, x, 1 / 6, 0.5))


def _hard_tanh(b: Any, x: Tensor) -> Tensor:
    clipped = _relu_capped(1.0, "hard_tanh")(b, _rescale(b, x, 0.5, 0.5))
    return _rescale(b, clipped, 2.0, -1.0)


def _hard_silu(b: Any, x: Tensor) -> Tensor:
    return b.add_layer("hard_silu", "Multiply", {}, [x, _hard_sigmoid(b, x)], x.shape)


def _gelu_tanh(b: Any, x: Tensor) -> Tensor:
    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), from layers tfjs has.
    cube = b.add_layer("gelu_cube", "Multiply", {}, [x, x, x], x.shape)
    inner = b.add_layer("gelu_inner", "Add", {}, [x, _rescale(b, cube, 0.044715, 0.0)], x.shape)
    scaled = _rescale(b, inner, math.sqrt(2 / math.pi), 0.0)
    tanh = b.add_layer("gelu_tanh", "Activation", {"activation": "tanh"}, [scaled], x.shape)
    half = _rescale(b, tanh, 0.5, 0.5)
    return b.add_layer("gelu", "Multiply", {}, [x, half], x.shape)


def _log_sigmoid(b: Any, x: Tensor) -> Tensor:
    soft = _activation("softplus")(b, _rescale(b, x, -1.0, 0.0))
    return _rescale(b, soft, -1.0, 0.0)


def _elu_alpha(b: Any, x: Tensor, alpha: float) -> Tensor:
    # tfjs' ELU layer rejects alpha != 1: relu(x) - alpha * relu(-elu(x)) (exact on both sides of 0).
    negative_part = _relu_capped(None, "elu_negative")(b, _rescale(b, _activation("elu")(b, x), -1.0, 0.0))
    scaled = _rescale(b, negative_part, -float(np.float32(alpha)), 0.0)
    return b.add_layer("elu_alpha", "Add", {}, [_relu_capped(None)(b, x), scaled], x.shape)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # noqa: PLC0415 - scipy comes with jax

    return erf(x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


CATALOG: tuple[Function, ...] = (
    Function("relu", lambda x: np.maximum(x, 0), _relu_capped(None)),
    Function("relu6", lambda x: np.clip(x, 0, 6), _relu_capped(6.0, "relu6")),
    Function("elu", lambda x: np.where(x > 0, x, np.expm1(x)), _activation("elu")),
    Function("selu", lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)), _activation("selu")),
    Function("sigmoid", _sigmoid, _activation("sigmoid")),
    Function("tanh", np.tanh, _activation("tanh")),
    Function("softplus", lambda x: np.logaddexp(x, 0), _activation("softplus")),
    Function("softsign", lambda x: x / (1 + np.abs(x)), _activation("softsign")),
    Function("swish", lambda x: x * _sigmoid(x), _activation("swish")),
    Function("mish", lambda x: x * np.tanh(np.logaddexp(x, 0)), _activation("mish")),
    Function("gelu", lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))), _activation("gelu")),
    Function("gelu_tanh", lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))), _gelu_tanh),
    Function("hard_sigmoid", lambda x: np.clip(x / 6 + 0.5, 0, 1), _hard_sigmoid),
    Function("hard_tanh", lambda x: np.clip(x, -1, 1), _hard_tanh),
    Function("hard_silu", lambda x: x * np.clip(x / 6 + 0.5, 0, 1), _hard_silu),
    Function("log_sigmoid", lambda x: -np.logaddexp(-x, 0), _log_sigmoid),
    Function("softmax", _softmax, _activation("softmax")),
    Function("log_softmax", lambda x: np.log(_softmax(x)), _activation("log_softmax")),
)


@handles(*ELEMENTWISE)
def elementwise(builder: Any, eqn: Any, values: list, where: str) -> Any:
    from topology.ops.merge import merge
    from topology.ops.pooling import WindowSum, finish_window_sum

    if any(isinstance(v, WindowSum) for v in values):
        return finish_window_sum(builder, eqn, values, where)
    from topology.ops.constants import with_constants

    result, values = with_constants(builder, eqn, values, where)  # constant arrays and parameters
    if result is not None:
        return result
    roots = {id(_root(v)): _root(v) for v in values if isinstance(v, (Tensor, Pending))}
    if len(roots) > 1:
        return merge(builder, eqn, values, where)
    if any(isinstance(v, Const) and not v.known for v in values):
        from topology.trace.build import unsupported

        raise unsupported(f"`{eqn.primitive.name}` of activations with a parameter outside a known layer", where,
                          "move the parameter into a layer (e.g. nn.Dense, nn.BatchNorm), or fold it into one")
    root = next(iter(roots.values()))
    parts = [_as_function(v) for v in values]
    primitive, params = eqn.primitive, eqn.params

    def fn(r: Any) -> Any:
        return primitive.bind(*[part(r) for part in parts], **params)

    out = eqn.outvars[0].aval
    return Pending(root, fn, tuple(out.shape), np.dtype(out.dtype), where)


def _root(value: Tensor | Pending) -> Tensor:
    return value.root if isinstance(value, Pending) else value


def _as_function(value: Any) -> Callable[[Any], Any]:
    if isinstance(value, Pending):
        return value.fn
    if isinstance(value, Tensor):
        return lambda r: r
    return lambda r, v=value.value: v


def probes(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Deterministic test inputs of ``shape`` that together hold every probe value.

    The values are a ramp over [-6, 6], signed zeros, tiny values and random
    ones, shuffled so that every input mixes both signs. A small tensor gets
    several inputs: identifying a function from a few values of one sign would
    confuse e.g. relu with gelu or hard_sigmoid.

    Example:
        >>> xs = probes((2, 3))
        >>> len(xs) > 1, xs[0].shape, bool(np.concatenate(xs).min() < 0 < np.concatenate(xs).max())
        (True, (2, 3), True)
    """
    count = max(int(np.prod(shape)), 1)
    ramp = np.linspace(-6, 6, 241)
    rng = np.random.RandomState(0)
    noise = rng.normal(0, 3, max(count, 256))
    values = rng.permutation(np.concatenate([ramp, [0.0, -0.0, 1e-3, -1e-3], noise]))
    chunks = -(-len(values) // count)
    values = np.resize(values, chunks * count).astype(np.float32)
    return [values[i * count:(i + 1) * count].reshape(shape) for i in range(chunks)]


def materialize(builder: Any, pending: Pending) -> Tensor:
    """Identify ``pending`` and add the layers that compute it."""
    from topology.ops.reduce import materialize_reduction
    from topology.trace.build import unsupported

    if getattr(pending, "array_constants", False):
        from topology.ops.constants import materialize_affine

        return materialize_affine(builder, pending)
    if tuple(pending.shape) != tuple(pending.root.shape):  # e.g. an attention bias from a padding input
        from topology.layers.attention_mask import padding_bias
        from topology.ops.sequence_mask import length_mask

        bias = padding_bias(builder, pending) or length_mask(builder, pending)
        if bias is not None:
            return bias
    xs = probes(pending.root.shape)
    y = np.asarray(pending.fn(xs[0]), dtype=np.float64)
    if y.shape != tuple(pending.root.shape):
        return materialize_reduction(builder, pending, xs[0], y)
    y = np.stack([y] + [np.asarray(pending.fn(x), dtype=np.float64) for x in xs[1:]])
    x64 = np.stack(xs).astype(np.float64)
    if _close(y, x64):
        return pending.root
    for function in CATALOG:
        with np.errstate(all="ignore"):
            if _close(y, function.reference(x64)):
                return function.emit(builder, pending.root)
    fitted = _fit_parametric(builder, pending.root, x64, y)
    if fitted is not None:
        return fitted
    raise unsupported("an element-wise function that is none of " + ", ".join(f.name for f in CATALOG)
                      + ", leaky_relu, elu(alpha) or a x + b", pending.where,
                      "use one of those activations, or compose it from them")


def _close(actual: np.ndarray, expected: np.ndarray) -> bool:
    return actual.shape == expected.shape and bool(np.allclose(actual, expected, rtol=RTOL, atol=ATOL, equal_nan=False))


def _fit_parametric(builder: Any, root: Tensor, x: np.ndarray, y: np.ndarray) -> Tensor | None:
    negative, positive = x < -0.5, x > 0.5
    if not negative.any() or not positive.any():
        return None
    if _close(y[positive], x[positive]):
        slope = float(np.median(y[negative] / x[negative]))
        if _close(y, np.where(x >= 0, x, slope * x)):
            return builder.add_layer("leaky_relu", "LeakyReLU", {"alpha": float(np.float32(slope))}, [root], root.shape)
        alpha = float(np.median(y[negative] / np.expm1(x[negative])))
        if _close(y, np.where(x > 0, x, alpha * np.expm1(x))):
            return _elu_alpha(builder, root, alpha)
    scale, offset = np.polyfit(x.ravel(), y.ravel(), 1)
    if _close(y, scale * x + offset):
        return _rescale(builder, root, float(np.float32(scale)), float(np.float32(offset)))
    return None


def _cases():
    """Every catalogued function and the parametric ones, after a layer and on a raw input, Linen and NNX."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from topology.layers.base import Case

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
