"""The element-wise functions tfjs has, and how a function is identified by value.

A :class:`Pending` function is applied to :func:`probes` (deterministic inputs
covering both signs, zeros and tiny values) and compared (:func:`close`) with
the numpy reference of every entry of :data:`CATALOG`; the match decides the
tfjs layers (its emitter). Each entry is (name, reference function in numpy,
emitter). A function tfjs lacks (``jax.nn.gelu``'s tanh approximation,
``hard_sigmoid``) is composed from layers it has; leaky_relu, elu(alpha) and
``a x + b`` are fitted (:func:`fit_parametric`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from topology.trace_kit.builder import Builder
from topology.trace_kit.values import Tensor

ATOL, RTOL = 1e-6, 1e-5


@dataclass(frozen=True)
class Function:
    """A catalogued function: its reference in numpy and how to build it in tfjs."""

    name: str
    reference: Callable[[np.ndarray], np.ndarray]
    emit: Callable[[Builder, Tensor], Tensor]


def _activation(name: str) -> Callable[[Builder, Tensor], Tensor]:
    return lambda b, x: b.add_layer(name, "Activation", {"activation": name}, [x], x.shape)


def _relu_capped(cap: float | None, op: str = "relu") -> Callable[[Builder, Tensor], Tensor]:
    return lambda b, x: b.add_layer(op, "ReLU", {"max_value": cap, "negative_slope": 0.0, "threshold": 0.0}, [x], x.shape)


def _rescale(b: Builder, x: Tensor, scale: float, offset: float) -> Tensor:
    return b.add_layer("rescaling", "Rescaling", {"scale": float(scale), "offset": float(offset)}, [x], x.shape)


def _hard_sigmoid(b: Builder, x: Tensor) -> Tensor:  # jax: relu6(x + 3) / 6 (tfjs' hardSigmoid is Keras-2's 0.2x+0.5)
    return _relu_capped(1.0, "hard_sigmoid")(b, _rescale(b, x, 1 / 6, 0.5))


def _hard_tanh(b: Builder, x: Tensor) -> Tensor:
    clipped = _relu_capped(1.0, "hard_tanh")(b, _rescale(b, x, 0.5, 0.5))
    return _rescale(b, clipped, 2.0, -1.0)


def _hard_silu(b: Builder, x: Tensor) -> Tensor:
    return b.add_layer("hard_silu", "Multiply", {}, [x, _hard_sigmoid(b, x)], x.shape)


def _gelu_tanh(b: Builder, x: Tensor) -> Tensor:
    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), from layers tfjs has.
    cube = b.add_layer("gelu_cube", "Multiply", {}, [x, x, x], x.shape)
    inner = b.add_layer("gelu_inner", "Add", {}, [x, _rescale(b, cube, 0.044715, 0.0)], x.shape)
    scaled = _rescale(b, inner, math.sqrt(2 / math.pi), 0.0)
    tanh = b.add_layer("gelu_tanh", "Activation", {"activation": "tanh"}, [scaled], x.shape)
    half = _rescale(b, tanh, 0.5, 0.5)
    return b.add_layer("gelu", "Multiply", {}, [x, half], x.shape)


def _log_sigmoid(b: Builder, x: Tensor) -> Tensor:
    soft = _activation("softplus")(b, _rescale(b, x, -1.0, 0.0))
    return _rescale(b, soft, -1.0, 0.0)


def _elu_alpha(b: Builder, x: Tensor, alpha: float) -> Tensor:
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


def probes(shape: tuple[int, ...], dtype: np.dtype | str = "float32") -> list[np.ndarray]:
    """Deterministic test inputs of ``shape`` (and the root tensor's ``dtype``) that together hold every
    probe value; for an integer root (token ids, an int mask) the values are rounded, since the traced
    function only takes that dtype (``lax.ne(ids, 0)`` refuses floats).

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
    if np.dtype(dtype).kind in "iub":
        values = np.rint(values).astype(dtype) if np.dtype(dtype).kind == "i" else (values > 0).astype(dtype)
    return [values[i * count:(i + 1) * count].reshape(shape) for i in range(chunks)]


def close(actual: np.ndarray, expected: np.ndarray) -> bool:
    """Same shape and equal within the identification tolerance (ATOL, RTOL; NaN never matches).

    Example:
        >>> close(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-7])), close(np.ones(2), np.ones(3))
        (True, False)
    """
    return actual.shape == expected.shape and bool(np.allclose(actual, expected, rtol=RTOL, atol=ATOL, equal_nan=False))


def fit_parametric(builder: Builder, root: Tensor, x: np.ndarray, y: np.ndarray) -> Tensor | None:
    """leaky_relu(slope), elu(alpha) or ``a x + b`` fitted to ``y`` = f(``x``) and emitted; None if none fits."""
    negative, positive = x < -0.5, x > 0.5
    if not negative.any() or not positive.any():
        return None
    if close(y[positive], x[positive]):
        slope = float(np.median(y[negative] / x[negative]))
        if close(y, np.where(x >= 0, x, slope * x)):
            return builder.add_layer("leaky_relu", "LeakyReLU", {"alpha": float(np.float32(slope))}, [root], root.shape)
        alpha = float(np.median(y[negative] / np.expm1(x[negative])))
        if close(y, np.where(x > 0, x, alpha * np.expm1(x))):
            return _elu_alpha(builder, root, alpha)
    scale, offset = np.polyfit(x.ravel(), y.ravel(), 1)
    if close(y, scale * x + offset):
        return _rescale(builder, root, float(np.float32(scale)), float(np.float32(offset)))
    return None


