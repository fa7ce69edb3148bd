"""Constant arrays and parameters used outside a layer (`x + pe[:, :L]`, a learned position
embedding, a cls token, `nn.Embed` of `jnp.arange(L)`, per-channel `(x - mean) / std`): a
constant C is a Dense with a zero kernel and bias C applied to one element of the activation it
meets (`0 * x + C`, exact for finite x; NaN where that element is inf or NaN), then Add, Multiply,
Maximum, Minimum or Concatenate; a known a x + b per channel is one BatchNormalization.

This family is the element-wise handler's hook for them (:func:`with_constants`).

A known constant array in ``+ - * /`` with one activation (per-channel
``(x - mean) / std`` preprocessing) stays an element-wise function; it is
identified as ``a x + b`` and becomes one BatchNormalization(mean 0, var 1,
epsilon 0, gamma a, beta b) when a and b vary along the channels only, else
Multiply and Add with constants. A per-channel parameter vector in ``+ - * /``
is one BatchNormalization too; any other constant array becomes a constant
tensor (``builder.constant_tensor``: a Dense with a zero kernel and bias C read
off one element of the activation, ``topology/trace/constant_tensors.py``) and
Add, Multiply, Maximum or Minimum. How the walk folds constants and keeps
parameters lazy is the engine's (``topology/trace/constants.py``); this
family's cases test all of it end to end.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from topology.graph import WeightBinding
from topology.layers.base import Case
from topology.layers.batchnorm import batch_norm_config
from topology.ops.catalog import probes
from topology.trace_kit.builder import Builder
from topology.trace_kit.errors import unsupported
from topology.trace_kit.values import Const, Lazy, Pending, Tensor, as_function, one_example, root_of
from topology.vocabulary.errors import ConversionError
from topology.vocabulary.tensors import TensorRef

AFFINE_STEPS = ("add", "sub", "mul", "div", "neg", "convert_element_type", "copy", "copy_p")
_BOOLEAN = ("and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le")
_MERGE = {"add": "Add", "mul": "Multiply", "max": "Maximum", "min": "Minimum"}


def is_array(value: Any) -> bool:
    """A constant that is not one number repeated: a parameter, or a known array of distinct values.

    Example:
        >>> is_array(Const(np.arange(3.0))), is_array(Const(np.full(3, 2.0))), is_array(Const(None))
        (True, False, False)
    """
    if not isinstance(value, Const):
        return False
    if value.lazy is not None:
        return True
    v = value.value
    return isinstance(v, np.ndarray) and v.size > 1 and v.dtype != object and bool(np.any(v != v.flat[0]))


def _holds_arrays(value: Any) -> bool:
    return isinstance(value, Pending) and getattr(value, "array_constants", False)


def _affine_step(name: str, values: list) -> bool:
    """``name`` keeps an a x + b function a x + b: +, - with anything constant, * by a constant, / by one."""
    if name not in AFFINE_STEPS:
        return False
    if name in ("mul", "div"):
        consts = [i for i, v in enumerate(values) if isinstance(v, Const)]
        return len(values) == 2 and len(consts) == 1 and values[consts[0]].known and (name == "mul" or consts == [1])
    return all(v.known for v in values if isinstance(v, Const))


def with_constants(builder: Builder, eqn: Any, values: list, where: str) -> tuple[Any, list]:
    """The element-wise hook: (result, values) when array constants are involved, else (None, values).

    A known array in + - * / with one activation gives a :class:`Pending` marked as holding
    arrays (identified later by :func:`materialize_affine`); any other array constant becomes a
    constant tensor and a merge layer. A marked function meeting a non-affine step is made a
    tensor first.

    Example:
        >>> result, values = with_constants(builder, eqn, values, "model.py:5")   # doctest: +SKIP
    """
    name = eqn.primitive.name
    arrays = [v for v in values if is_array(v)]
    held = any(_holds_arrays(v) for v in values)
    if not arrays and not held:
        return None, values
    if name in _BOOLEAN and not held:  # masks (causal & padding): kept symbolic for the attention kind
        return None, values
    if arrays:  # another function of the activation (relu(h) + table) is made a tensor first
        values = [builder.tensor(v, where) if isinstance(v, Pending) and not _holds_arrays(v) else v for v in values]
    if _affine_step(name, values) and sum(not isinstance(v, Const) for v in values) == 1:
        return _pending(eqn, values, where), values
    if held:
        values = [builder.tensor(v, where) if _holds_arrays(v) else v for v in values]
    if not arrays:
        return None, values
    if name not in (*_MERGE, "sub", "div"):
        return None, values  # e.g. a constant mask in jnp.where: not this module's business
    per_channel = _per_channel(builder, eqn, values)
    if per_channel is not None:
        return per_channel, values
    if name == "div" and not isinstance(values[1], Const):
        raise unsupported("dividing a constant array by activations", where, "multiply by the reciprocal instead")
    if name == "div":  # x / C = x * (1 / C): within one rounding of JAX
        values = [values[0], _reciprocal(values[1])]
        name = "mul"
    tensors = builder.as_tensors(values, where)
    shape = tuple(eqn.outvars[0].aval.shape)
    if name == "sub":
        negated = builder.add_layer("negate", "Rescaling", {"scale": -1.0, "offset": 0.0}, [tensors[1]], shape)
        return builder.add_layer("subtract", "Add", {}, [tensors[0], negated], shape), values
    return builder.add_layer(_MERGE[name].lower(), _MERGE[name], {}, tensors, shape), values


def _per_channel(builder: Builder, eqn: Any, values: list) -> Tensor | None:
    """``x + c``, ``x - c``, ``c - x``, ``x * c``, ``x / c`` with a per-channel parameter vector c: one
    BatchNormalization, computed like JAX (tfjs' cpu kernel evaluates ``beta + (x - mean) * gamma /
    sqrt(var + eps)`` in double precision and rounds once): add/sub through beta, mul through gamma,
    and division as variance c**2 with gamma sign(c). None when this is not such an operation."""
    name, shape = eqn.primitive.name, tuple(eqn.outvars[0].aval.shape)
    consts = [i for i, v in enumerate(values) if isinstance(v, Const)]
    if name not in ("add", "sub", "mul", "div") or len(values) != 2 or len(consts) != 1 or len(shape) < 2:
        return None
    const, other = values[consts[0]], values[1 - consts[0]]
    if const.lazy is None or const.lazy.channels != shape[-1] or (name == "div" and consts != [1]):
        return None
    lazy, channels, where = const.lazy, shape[-1], ""
    x = builder.tensor(other, where)
    if tuple(x.shape) != shape:
        return None

    def vector(transform: Callable[[np.ndarray], np.ndarray]) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            rows = np.asarray(lazy.compute(), np.float32).reshape(-1, channels)
            if not np.array_equal(rows, np.broadcast_to(rows[:1], rows.shape), equal_nan=True):
                raise ConversionError("UNSUPPORTED_OPERATION", f"the constant {lazy.origin} is not per channel",
                                      "use a per-channel vector, or a constant of the activations' shape")
            return transform(rows[0]).astype(np.float32)
        return load

    ones, zeros = (lambda c: np.ones_like(c)), (lambda c: np.zeros_like(c))
    gamma, beta, variance = ones, zeros, ones
    if name == "add":
        beta = lambda c: c  # noqa: E731
    elif name == "sub" and consts == [1]:
        beta = lambda c: -c  # noqa: E731
    elif name == "sub":
        gamma, beta = (lambda c: -np.ones_like(c)), (lambda c: c)
    elif name == "mul":
        gamma = lambda c: c  # noqa: E731
    else:  # x / c = x * sign(c) / sqrt(c**2)
        gamma, variance = np.sign, np.square
    weights = []
    for keras, fn in (("gamma", gamma), ("beta", beta), ("moving_mean", zeros), ("moving_variance", variance)):
        ref = TensorRef(("constant", lazy.origin, keras), (channels,), np.dtype("float32"), vector(fn),
                        "computed from the checkpoint")
        weights.append(WeightBinding(keras, (channels,), ref))
    return builder.add_layer(f"channel_{name}", "BatchNormalization",
                             batch_norm_config(-1, epsilon=0.0, center=True, scale=True), [x], shape, weights,
                             origin=f"{name} {lazy.origin}")


def _reciprocal(const: Const) -> Const:
    if const.known:
        return Const(np.float32(1) / np.asarray(const.value, np.float32))
    lazy = const.lazy
    return Const(None, Lazy(lambda: np.float32(1) / lazy.compute().astype(np.float32), lazy.shape, lazy.dtype,
                            lazy.origin))


def _pending(eqn: Any, values: list, where: str) -> Pending:
    root = next(root_of(v) for v in values if not isinstance(v, Const))
    parts = [as_function(v) for v in values]
    primitive, params = eqn.primitive, eqn.params
    out = eqn.outvars[0].aval
    pending = Pending(root, lambda r: primitive.bind(*[part(r) for part in parts], **params), tuple(out.shape),
                      np.dtype(out.dtype), where)
    pending.array_constants = True  # identified by materialize_affine, not the activation catalog
    return pending


def materialize_affine(builder: Builder, pending: Pending) -> Tensor:
    """A marked function of ``root``: a x + b with constant arrays a, b -> BatchNormalization or Multiply/Add."""
    root = pending.root
    if tuple(pending.shape) != tuple(root.shape):
        raise unsupported("a constant array combined with activations of another shape", pending.where,
                          "broadcast the constant to the activations' shape")
    big = np.full(root.shape, 1024.0, np.float32)
    b = np.asarray(pending.fn(np.zeros(root.shape, np.float32)), np.float64)
    a = (np.asarray(pending.fn(big), np.float64) - np.asarray(pending.fn(-big), np.float64)) / 2048.0
    whole = np.round(a)  # x + table: a is 1 up to the rounding of fn(+-1024); keep it exactly 1
    a = np.where(np.abs(a - whole) <= 1e-6 * np.maximum(1.0, np.abs(a)), whole, a)
    for x in probes(root.shape, root.dtype)[:4]:
        y = np.asarray(pending.fn(x), np.float64)
        if not np.allclose(y, a * x + b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(y).max()))):
            raise unsupported("an element-wise function of activations and a constant array that is not a x + b",
                              pending.where, "only + - * / with constant arrays convert")
    a, b = one_example(a, "scale"), one_example(b, "offset")
    shape, channels = tuple(root.shape), root.shape[-1]
    per_channel = lambda v: len(shape) >= 2 and bool(np.all(v == v.reshape(-1, channels)[:1]))  # noqa: E731
    x = root
    if np.all(a == 1) and np.all(b == 0):
        return root
    if per_channel(a) and (per_channel(b) or not np.all(a == 1)):
        beta = b.reshape(-1, channels)[0] if per_channel(b) else np.zeros(channels)
        weights = [WeightBinding("gamma", (channels,), constant=a.reshape(-1, channels)[0].astype(np.float32)),
                   WeightBinding("beta", (channels,), constant=beta.astype(np.float32)),
                   WeightBinding("moving_mean", (channels,), constant=np.zeros(channels, np.float32)),
                   WeightBinding("moving_variance", (channels,), constant=np.ones(channels, np.float32))]
        x = builder.add_layer("channel_affine", "BatchNormalization",
                              batch_norm_config(-1, epsilon=0.0, center=True, scale=True), [root], shape, weights,
                              origin="a x + b per channel")
        if per_channel(b):
            return x
    elif not np.all(a == 1):
        scale = builder.constant_tensor(Const(np.broadcast_to(a.astype(np.float32), shape)), root, pending.where)
        x = builder.add_layer("scale", "Multiply", {}, [root, scale], shape)
    if np.all(b == 0):
        return x
    offset = builder.constant_tensor(Const(np.broadcast_to(b.astype(np.float32), shape)), root, pending.where)
    return builder.add_layer("offset", "Add", {}, [x, offset], shape)


def _cases():
    """Fixed tables, learned Params, cls tokens, embeddings of arange and per-channel normalization; Linen and NNX."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as onp
    from flax import nnx

    def sinusoids(length: int, features: int) -> onp.ndarray:
        position = onp.arange(length)[:, None]
        div = onp.exp(onp.arange(0, features, 2) * -(onp.log(10000.0) / features))
        table = onp.zeros((length, features), onp.float32)
        table[:, 0::2], table[:, 1::2] = onp.sin(position * div), onp.cos(position * div)
        return table[None]

    class FixedTable(nn.Module):  # flax nlp_seq / wmt: inputs + pe[:, :length]
        @nn.compact
        def __call__(self, x):
            pe = jnp.asarray(sinusoids(16, 6))
            return nn.Dense(3)(nn.Dense(6)(x) + pe[:, :x.shape[1]])

    class LearnedPosition(nn.Module):
        @nn.compact
        def __call__(self, x):
            pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], 8))
            return nn.relu(nn.Dense(8)(x) + pos)

    class ClsToken(nn.Module):  # HF ViT: concatenate a learned token in front of the patches
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4)(x)
            cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, 4))
            h = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, 4)), h], axis=1)
            return nn.Dense(2)(h[:, 0])

    class PositionIds(nn.Module):  # HF BERT / GPT-2: embeddings of arange(L) added to token embeddings
        @nn.compact
        def __call__(self, ids):
            positions = jnp.broadcast_to(jnp.arange(ids.shape[-1]), ids.shape)
            segments = jnp.zeros_like(ids)
            h = nn.Embed(20, 6)(ids) + nn.Embed(10, 6)(positions) + nn.Embed(2, 6)(segments)
            return nn.LayerNorm()(h)

    class ParamScale(nn.Module):  # a learned per-feature scale and shift outside a layer
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4)(x)
            return h * self.param("scale", nn.initializers.ones, (4,)) - self.param("shift", nn.initializers.zeros, (4,))

    class ParamDivide(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4)(x) / (1.0 + jnp.abs(self.param("temperature", nn.initializers.ones, (4,))))

    class Normalize(nn.Module):  # flaxmodels ResNet/VGG: (x - mean) / std per channel, then a conv
        @nn.compact
        def __call__(self, x):
            mean = jnp.array([0.485, 0.456, 0.406]).reshape(1, 1, 1, -1)
            std = jnp.array([0.229, 0.224, 0.225]).reshape(1, 1, 1, -1)
            return nn.Conv(4, (3, 3))((x - mean) / std)

    class NormalizeRelu(nn.Module):  # a per-position affine followed by an activation
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.relu(x * jnp.arange(1.0, 6.0) + 0.5))

    class MaxWithTable(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(jnp.maximum(nn.Dense(5)(x), jnp.linspace(-1.0, 1.0, 5)))

    class TableAffine(nn.Module):  # a per-position scale and offset (neither per channel)
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(3)(x)
            return h * (1.0 + jnp.arange(12.0).reshape(4, 3) / 10) + jnp.arange(12.0).reshape(4, 3)

    class HandwrittenBatchNorm(nn.Module):  # flaxmodels' own BatchNorm: statistics used in plain arithmetic
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(4, (3, 3))(x)
            mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(4)).value
            var = self.variable("batch_stats", "var", lambda: jnp.ones(4)).value
            scale, bias = self.param("scale", nn.initializers.ones, (4,)), self.param("bias", nn.initializers.zeros, (4,))
            y = (x - mean.reshape(1, 1, 1, -1)) * (jax.lax.rsqrt(var + 1e-5) * scale).reshape(1, 1, 1, -1)
            return nn.relu(y + bias.reshape(1, 1, 1, -1))

    class ChannelDivide(nn.Module):  # c - x and x / c with per-channel parameters
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4)(x)
            return (self.param("c", nn.initializers.ones, (4,)) - h) / (2.0 + self.param("d", nn.initializers.zeros, (4,)))

    class PositionDivide(nn.Module):  # x / a (1, L, D) parameter: Multiply by its reciprocal
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x) / (1.5 + jnp.abs(self.param("temp", nn.initializers.normal(1.0), (1, x.shape[1], 3))))

    class NnxChannelParams(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv = nnx.Conv(2, 3, (3, 3), rngs=rngs)
            self.gain = nnx.Param(jnp.ones(3))
            self.shift = nnx.Param(jnp.zeros(3))

        def __call__(self, x):
            return self.conv(x) * self.gain.value + self.shift.value

    class NnxViTEmbed(nnx.Module):  # NNX ViT tutorial: patches + cls token + learned positions
        def __init__(self, rngs: nnx.Rngs):
            self.patches = nnx.Conv(3, 8, (4, 4), strides=(4, 4), padding="VALID", rngs=rngs)
            self.cls_token = nnx.Param(nnx.initializers.normal(0.5)(rngs.params(), (1, 1, 8)))
            self.position_embeddings = nnx.Param(nnx.initializers.normal(0.5)(rngs.params(), (1, 5, 8)))
            self.head = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            h = self.patches(x).reshape((x.shape[0], -1, 8))
            cls = jnp.tile(self.cls_token.value, (x.shape[0], 1, 1))
            h = jnp.concatenate([cls, h], axis=1) + self.position_embeddings.value
            return self.head(h[:, 0])

    class NnxPositionIds(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.tokens = nnx.Embed(20, 4, rngs=rngs)
            self.positions = nnx.Embed(8, 4, rngs=rngs)

        def __call__(self, ids):
            return self.tokens(ids) + self.positions(jnp.arange(ids.shape[1])[None, :])

    class NnxNormalize(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv = nnx.Conv(3, 2, (3, 3), rngs=rngs)

        def __call__(self, x):
            return self.conv((x - jnp.array([0.5, 0.4, 0.3])) / jnp.array([0.2, 0.25, 0.3]))

    ids = {"input_dtype": "int32", "input_range": (0, 20)}
    return (
        Case("linen-fixed-sinusoid-table", FixedTable, (5, 4)),
        Case("linen-learned-position-param", LearnedPosition, (5, 3)),
        Case("linen-cls-token-concatenate", ClsToken, (4, 3)),
        Case("linen-embed-of-arange-position-ids", PositionIds, (7,), **ids),
        Case("linen-param-scale-shift", ParamScale, (3,)),
        Case("linen-param-divide", ParamDivide, (3,)),
        Case("linen-per-channel-normalize", Normalize, (6, 6, 3), input_range=(0.0, 1.0)),
        Case("linen-per-position-affine-relu", NormalizeRelu, (5,)),
        Case("linen-maximum-with-table", MaxWithTable, (3,)),
        Case("nnx-vit-cls-token-positions", lambda: NnxViTEmbed(nnx.Rngs(0)), (8, 8, 3)),
        Case("nnx-embed-of-arange", lambda: NnxPositionIds(nnx.Rngs(0)), (6,), **ids),
        Case("nnx-per-channel-normalize", lambda: NnxNormalize(nnx.Rngs(0)), (5, 5, 3), input_range=(0.0, 1.0)),
        Case("linen-table-times-activation-plus-table", TableAffine, (4, 3)),
        Case("linen-handwritten-batchnorm-statistics", HandwrittenBatchNorm, (5, 5, 2)),
        Case("linen-channel-param-minus-and-divide", ChannelDivide, (3,)),
        Case("linen-divide-by-position-param", PositionDivide, (4, 2)),
        Case("nnx-channel-param-scale-shift", lambda: NnxChannelParams(nnx.Rngs(0)), (5, 5, 2)),
    )


CASES = _cases
