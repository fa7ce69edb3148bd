"""Flax ``nn.BatchNorm`` / NNX ``nnx.BatchNorm`` (running statistics) -> tfjs ``BatchNormalization``.

Weights: ``gamma``/``beta`` from params ``scale``/``bias``, ``moving_mean``/
``moving_variance`` from batch_stats ``mean``/``var``. Flax's defaults differ
from Keras' (epsilon 1e-5 vs 1e-3), so epsilon and momentum are always written.
The layer always normalizes the last axis, written as the int -1 (``[-1]``
breaks tfjs): tfjs' batchNorm kernels give wrong values for another axis and
stop at rank 4, so another feature axis is moved last by Permute layers and a
rank-5+ input is folded to rank <= 4 by Reshapes; both are exact.

Also home of :func:`channel_affine`: a BatchNormalization with mean 0,
variance 1 and epsilon 0 is exactly ``x * scale + bias`` per channel, the
affine part the other normalizations (LayerNorm over other axes, GroupNorm,
RMSNorm) need after their normalizing step.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from topology.graph import LayerNode, WeightBinding
from topology.layers.base import ONES, ZEROS, Case, LayerKind, ParamMap, bind, layer_base
from topology.layers.views import reshape_node
from topology.trace_kit.call_context import CallContext
from topology.trace_kit.errors import unsupported
from topology.vocabulary.errors import ConversionError


def batch_norm_config(axis: int = -1, epsilon: float = 1e-5, momentum: float = 0.99,
                      center: bool = True, scale: bool = True) -> dict:
    """The full Keras-2 BatchNormalization config (axis is an int: tfjs misreads ``[-1]``).

    Example:
        >>> batch_norm_config(axis=-1)["epsilon"]
        1e-05
    """
    return layer_base(
        axis=int(axis), momentum=float(momentum), epsilon=float(epsilon), center=bool(center), scale=bool(scale),
        beta_initializer=ZEROS, gamma_initializer=ONES,
        moving_mean_initializer=ZEROS, moving_variance_initializer=ONES,
        beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
    )


def channel_affine(name: str, shape: tuple[int, ...], inputs: list[str], variables: dict, origin: str,
                   use_scale: bool, use_bias: bool, transform: Any = None) -> LayerNode | None:
    """``x * scale + bias`` along the last axis of a rank 2-4 tensor (``shape`` without batch), exactly:
    a BatchNormalization with moving mean 0, moving variance 1 and epsilon 0. None when there is
    neither scale nor bias.

    Example:
        >>> channel_affine("a", (3,), ["x"], {}, "gn", False, False) is None
        True
    """
    if not (use_scale or use_bias):
        return None
    channels = int(shape[-1])
    weights = []
    if use_scale:
        weights.append(bind(variables, "params", "scale", "gamma", origin, transform))
    if use_bias:
        weights.append(bind(variables, "params", "bias", "beta", origin, transform))
    weights += [
        WeightBinding("moving_mean", (channels,), constant=np.zeros(channels, np.float32)),
        WeightBinding("moving_variance", (channels,), constant=np.ones(channels, np.float32)),
    ]
    config = batch_norm_config(-1, epsilon=0.0, center=use_bias, scale=use_scale)
    return LayerNode(name, "BatchNormalization", config, list(inputs), weights, tuple(shape), origin)


def _read_attrs(module: Any, context: CallContext) -> dict:
    return {
        "epsilon": float(module.epsilon), "momentum": float(module.momentum),
        "center": bool(module.use_bias), "scale": bool(module.use_scale), "_axis": module.axis,
        "_use_running_average": module.use_running_average,
    }


def training_mode_error(layer: str, origin: str, flag: str, example: str) -> ConversionError:
    """The error for a layer the model calls in training mode whatever the inference flags say.

    Example:
        >>> training_mode_error("BatchNorm", "bn", "use_running_average=False", "use_running_average=not train").code
        'TRAINING_MODE'
    """
    return ConversionError(
        "TRAINING_MODE", f"{layer} {origin} is called with {flag} (training mode) while tracing for inference",
        f"let a flag choose the mode, e.g. {example}; the converter calls the model with train=False, "
        "training=False, deterministic=True or use_running_average=True and NNX modules after .eval()",
    )


def _feature_axis(axis: Any, rank: int, origin: str) -> int:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if len(axes) != 1:
        raise unsupported(f"BatchNorm {origin} over several feature axes {axes}", origin,
                          "use one feature axis (axis=-1, the default)")
    canonical = axes[0] % rank
    if canonical == 0:
        raise unsupported(f"BatchNorm {origin} with the batch axis as feature axis", origin, "use axis=-1")
    return canonical


def _expand(kind: LayerKind, name: str, attrs: dict, inputs: list[str], variables: dict, origin: str,
            output_shape: Any) -> list[LayerNode]:
    running = attrs.get("_call_flags", {}).get("use_running_average", attrs.get("_use_running_average"))
    if running is False:  # batch statistics of the input: not what a converted model can compute
        raise training_mode_error("BatchNorm", origin, "use_running_average=False", "use_running_average=not train")
    in_shape = tuple(attrs["_input_shapes"][0])  # batch included
    rank = len(in_shape)
    axis = _feature_axis(attrs["_axis"], rank, origin)
    weights = []
    if attrs["scale"]:
        weights.append(bind(variables, "params", "scale", "gamma", origin))
    if attrs["center"]:
        weights.append(bind(variables, "params", "bias", "beta", origin))
    weights += [bind(variables, "batch_stats", "mean", "moving_mean", origin),
                bind(variables, "batch_stats", "var", "moving_variance", origin)]
    features = tuple(in_shape[1:])
    config = batch_norm_config(-1, attrs["epsilon"], attrs["momentum"], attrs["center"], attrs["scale"])
    if axis == rank - 1 and rank <= 4:
        return [LayerNode(name, "BatchNormalization", config, list(inputs), weights, features, origin)]
    # tfjs' batchNorm kernels broadcast the statistics along the LAST axis only (any other axis gives
    # wrong values on the cpu backend) and stop at rank 4. So fold deep inputs to rank <= 4 around the
    # feature axis and move it last (Permute) around the normalization; both are exact.
    before, channels, after = math.prod(in_shape[1:axis]), in_shape[axis], math.prod(in_shape[axis + 1:])
    nodes: list[LayerNode] = []
    work, moved = features, axis  # the shape normalized, and where its feature axis is (1-based)
    if rank > 4:
        work = (before, channels) if axis == rank - 1 else (before, channels, after)
        moved = len(work) if axis == rank - 1 else 2
        nodes.append(reshape_node(f"{name}.fold", work, inputs, origin))
    order = [d for d in range(1, len(work) + 1) if d != moved] + [moved]
    if moved != len(work):
        permuted = tuple(work[d - 1] for d in order)
        nodes.append(LayerNode(f"{name}.channels_last", "Permute", layer_base(dims=order),
                               [nodes[-1].name] if nodes else list(inputs), [], permuted, origin))
    nodes.append(LayerNode(f"{name}.norm", "BatchNormalization", config, [nodes[-1].name] if nodes else list(inputs),
                           weights, nodes[-1].output_shape if nodes else work, origin))
    if moved != len(work):
        inverse = [order.index(d) + 1 for d in range(1, len(work) + 1)]
        nodes.append(LayerNode(f"{name}.restore", "Permute", layer_base(dims=inverse), [nodes[-1].name], [],
                               work, origin))
    if work != features:
        nodes.append(reshape_node(f"{name}.unfold", features, [nodes[-1].name], origin))
    nodes[-1].name = name  # the output carries the module's name (nothing reads the last node yet)
    return nodes


def _cases() -> tuple[Case, ...]:
    import flax.linen as nn
    from flax import nnx

    class ConvBN(nn.Module):  # the usual conv -> BN -> relu with a train flag
        @nn.compact
        def __call__(self, x, train: bool = True):
            x = nn.Conv(4, (3, 3))(x)
            return nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))

    class NnxConvBN(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)

        def __call__(self, x):
            return nnx.relu(self.bn(self.conv(x)))

    class CallFlag(nn.Module):  # the flag passed at call time instead of to the constructor
        @nn.compact
        def __call__(self, x, train: bool = True):
            return nn.BatchNorm(momentum=0.8)(nn.Dense(5)(x), use_running_average=not train)

    class Wrap(nn.Module):  # a configured BatchNorm inside a model (flags at the top level only)
        layer: nn.Module

        def __call__(self, x):
            return self.layer(x)

    def wrapped(**kwargs):
        return lambda: Wrap(nn.BatchNorm(use_running_average=True, **kwargs))

    return (
        Case("linen-batchnorm-dense", wrapped(), (6,)),
        Case("linen-batchnorm-call-flag", CallFlag, (4,)),
        Case("linen-batchnorm-conv-train-flag", ConvBN, (6, 6, 3)),
        Case("linen-batchnorm-no-scale", wrapped(use_scale=False), (4, 3)),
        Case("linen-batchnorm-no-bias-eps", wrapped(use_bias=False, epsilon=1e-3), (4, 3)),
        Case("linen-batchnorm-no-affine", lambda: nn.Sequential([nn.Dense(4), Wrap(nn.BatchNorm(
            use_running_average=True, use_bias=False, use_scale=False))]), (6,)),
        Case("linen-batchnorm-axis1", wrapped(axis=1), (4, 5, 3)),
        Case("linen-batchnorm-axis-neg2", wrapped(axis=-2), (3, 4, 2)),
        Case("linen-batchnorm-rank5", wrapped(), (3, 3, 2, 4)),
        Case("linen-batchnorm-rank5-axis2", wrapped(axis=2), (3, 4, 2, 2)),
        Case("nnx-batchnorm", lambda: nnx.BatchNorm(6, rngs=nnx.Rngs(0)), (6,)),
        Case("nnx-batchnorm-conv", lambda: NnxConvBN(nnx.Rngs(0)), (6, 6, 3)),
        Case("nnx-batchnorm-no-scale", lambda: nnx.BatchNorm(3, use_scale=False, rngs=nnx.Rngs(0)), (4, 3)),
    )


KIND = LayerKind(
    key="batchnorm",
    keras_class="BatchNormalization",
    flax_modules=("nn.BatchNorm", "nnx.BatchNorm"),
    make_config=batch_norm_config,
    params=(ParamMap("scale", "gamma", optional=True), ParamMap("bias", "beta", optional=True),
            ParamMap("mean", "moving_mean", "batch_stats"), ParamMap("var", "moving_variance", "batch_stats")),
    summary="batch normalization with the running statistics (batch_stats mean/var), explicit epsilon and "
            "momentum, one feature axis (any; rank 5+ via Reshape), use_scale/use_bias -> scale/center",
    flax_classes=("flax.linen:BatchNorm", "flax.nnx:BatchNorm"),
    read_attrs=_read_attrs,
    expand=_expand,
    cases=_cases,
)
