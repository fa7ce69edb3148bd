"""Flax ``nn.LayerNorm`` / ``nnx.LayerNorm`` -> tfjs ``LayerNormalization``; ``nn.RMSNorm`` /
``nnx.RMSNorm`` composed from built-in layers.

LayerNorm over the last axis (the transformer case) is composed from layers
that broadcast instead (``topology/layers/layernorm_tilefree.py``): tfjs'
own layer tiles four tensors per call, which costs more than the rest.
Other LayerNorms: the reduction axes become ``axis`` (an int for one axis), epsilon
is written explicitly (Flax 1e-6, Keras 1e-3), use_scale/use_bias become
scale/center. When the feature axes (where scale/bias live) differ from the
reduction axes, e.g. ``reduction_axes=(1, 2, 3), feature_axes=-1``, the layer
normalizes without affine and a per-channel affine follows. tfjs' layer
normalization stops at rank 4: deeper inputs over trailing axes are folded to
rank 3 by a Reshape and unfolded after.

RMSNorm (no centering) cannot be a LayerNormalization of x, but it is one of
``[x, -x]``: that pair has mean 0 and variance mean(x^2), so normalizing it
gives ``x / sqrt(mean(x^2) + eps)`` in its first half. The composition is
Reshape (..., 1, n) -> Rescaling(-1) + Concatenate -> LayerNormalization over
the pair -> Cropping2D (keep the first half) -> scale -> Reshape back.
"""
from __future__ import annotations

import math
from typing import Any

from topology.graph import LayerNode
from topology.layers.base import ONES, ZEROS, Case, LayerKind, ParamMap, bind, layer_base
from topology.layers.batchnorm import channel_affine
from topology.layers.layernorm_tilefree import tile_free_applies, tile_free_layer_norm
from topology.layers.views import reshaped
from topology.trace_kit.call_context import CallContext
from topology.trace_kit.errors import unsupported


def layer_norm_config(axis: Any = -1, epsilon: float = 1e-6, center: bool = True, scale: bool = True) -> dict:
    """The full Keras-2 LayerNormalization config.

    Example:
        >>> layer_norm_config(-1)["epsilon"]
        1e-06
    """
    return layer_base(
        axis=axis if isinstance(axis, int) else [int(a) for a in axis], epsilon=float(epsilon),
        center=bool(center), scale=bool(scale), beta_initializer=ZEROS, gamma_initializer=ONES,
        beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
    )


def canonical_axes(axes: Any, rank: int) -> tuple[int, ...]:
    """Flax's axes (int or sequence, negatives allowed) as sorted non-negative ints.

    Example:
        >>> canonical_axes(-1, 3), canonical_axes((1, -1), 4)
        ((2,), (1, 3))
    """
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    return tuple(sorted({int(a) % rank for a in axes}))


def _read_attrs(module: Any, context: CallContext) -> dict:
    centered = hasattr(module, "use_bias")  # RMSNorm has neither bias nor centering
    return {
        "epsilon": float(module.epsilon), "_centered": centered,
        "_use_bias": bool(module.use_bias) if centered else False, "_use_scale": bool(module.use_scale),
        "_reduction_axes": module.reduction_axes, "_feature_axes": module.feature_axes,
    }


def _expand(kind: LayerKind, name: str, attrs: dict, inputs: list[str], variables: dict, origin: str,
            output_shape: Any) -> list[LayerNode]:
    in_shape = tuple(attrs["_input_shapes"][0])
    rank = len(in_shape)
    reduce = canonical_axes(attrs["_reduction_axes"], rank)
    features = canonical_axes(attrs["_feature_axes"], rank)
    what = "LayerNorm" if attrs["_centered"] else "RMSNorm"
    if 0 in reduce or 0 in features:
        raise unsupported(f"{what} {origin} over the batch axis", origin, "normalize over feature axes only")
    trailing = reduce == tuple(range(rank - len(reduce), rank))
    if not attrs["_centered"]:
        if features != reduce or not trailing:
            raise unsupported(f"RMSNorm {origin} with reduction_axes {reduce} and feature_axes {features}", origin,
                              "use the same trailing axes for both (the default -1)")
        return rms_norm_nodes(name, in_shape, reduce, attrs, inputs, variables, origin)
    use_scale, use_bias, epsilon = attrs["_use_scale"], attrs["_use_bias"], attrs["epsilon"]
    axis: Any = -1 if reduce == (rank - 1,) else (reduce[0] if len(reduce) == 1 else list(reduce))
    # On a merged batch (OPT's (B*S, H), trace_kit/merged_batch.py) only per-token layers apply: the tile-free
    # composition reads whole rows of the traced rank, so tfjs' own LayerNormalization is used there.
    if features == reduce == (rank - 1,) and tile_free_applies(in_shape[-1], epsilon, rank) \
            and not attrs.get("_merged_batch"):
        gamma = bind(variables, "params", "scale", "gamma", origin) if use_scale else None
        beta = bind(variables, "params", "bias", "beta", origin) if use_bias else None
        return tile_free_layer_norm(name, in_shape, list(inputs), epsilon, gamma, beta, origin)
    if features == reduce and rank <= 4:
        weights = _affine_weights(variables, origin, use_scale, use_bias)
        config = layer_norm_config(axis, epsilon, use_bias, use_scale)
        return [LayerNode(name, "LayerNormalization", config, list(inputs), weights, in_shape[1:], origin)]
    if features == reduce and trailing:  # rank 5+: fold to (batch, rest, normalized)
        folded = (math.prod(in_shape[1:reduce[0]]), math.prod(in_shape[reduce[0]:]))
        weights = _affine_weights(variables, origin, use_scale, use_bias, _flat)
        config = layer_norm_config(-1, epsilon, use_bias, use_scale)
        norm = lambda source: [LayerNode(f"{name}.norm", "LayerNormalization", config, [source], weights,  # noqa: E731
                                         folded, origin)]
        return reshaped(name, inputs, folded, in_shape[1:], origin, norm, f"{name}.fold")
    if features == (rank - 1,) and rank <= 4:  # normalize over `reduce`, then scale/shift per channel
        norm = LayerNode(f"{name}.norm", "LayerNormalization", layer_norm_config(axis, epsilon, False, False),
                         list(inputs), [], in_shape[1:], origin)
        affine = channel_affine(name, in_shape[1:], [norm.name], variables, origin, use_scale, use_bias)
        if affine is None:
            norm.name = name
            return [norm]
        return [norm, affine]
    raise unsupported(f"LayerNorm {origin} with reduction_axes {reduce} and feature_axes {features} "
                      f"on a rank-{rank} input", origin,
                      "use feature_axes equal to reduction_axes, or -1 on an input of rank 4 or less")


def _flat(array: Any) -> Any:
    """Scale/bias over folded axes, flattened row-major like the data they scale."""
    return array.reshape(-1)


def _affine_weights(variables: dict, origin: str, use_scale: bool, use_bias: bool, transform: Any = None) -> list:
    weights = []
    if use_scale:
        weights.append(bind(variables, "params", "scale", "gamma", origin, transform))
    if use_bias:
        weights.append(bind(variables, "params", "bias", "beta", origin, transform))
    return weights


def rms_norm_nodes(name: str, in_shape: tuple, reduce: tuple, attrs: dict, inputs: list[str], variables: dict,
                   origin: str) -> list[LayerNode]:
    """RMSNorm over the trailing axes from ``reduce[0]`` composed from built-in layers (see the module text);
    ``attrs`` gives ``epsilon`` and ``_use_scale`` (the scale read from ``variables``).

    Example:
        >>> nodes = rms_norm_nodes("n", (2, 6), (1,), {"epsilon": 1e-6, "_use_scale": False}, ["x"], {}, "n")
        >>> [node.class_name for node in nodes][-3:]
        ['LayerNormalization', 'Cropping2D', 'Reshape']
    """
    rows = math.prod(in_shape[1:reduce[0]])
    width = math.prod(in_shape[reduce[0]:])
    single, pair = (rows, 1, width), (rows, 2, width)
    crop = layer_base(cropping=[[0, 0], [0, 1]], data_format="channels_last")

    def normalize(source: str) -> list[LayerNode]:
        nodes = [
            LayerNode(f"{name}.negate", "Rescaling", layer_base(scale=-1.0, offset=0.0), [source], [],
                      single, origin),
            LayerNode(f"{name}.pair", "Concatenate", layer_base(axis=2), [source, f"{name}.negate"], [],
                      pair, origin),
            # mean([x, -x]) = 0 and var([x, -x]) = mean(x^2): this is x / sqrt(mean(x^2) + eps) and its negation.
            LayerNode(f"{name}.norm", "LayerNormalization", layer_norm_config([2, 3], attrs["epsilon"], False, False),
                      [f"{name}.pair"], [], pair, origin),
            LayerNode(f"{name}.first", "Cropping2D", crop, [f"{name}.norm"], [], single, origin),
        ]
        affine = channel_affine(f"{name}.scale", single, [nodes[-1].name], variables, origin,
                                attrs["_use_scale"], False, _flat)
        return nodes if affine is None else [*nodes, affine]

    return reshaped(name, inputs, single, in_shape[1:], origin, normalize, f"{name}.rows")


def _cases() -> tuple[Case, ...]:
    import flax.linen as nn
    from flax import nnx

    class DenseLN(nn.Module):  # a transformer-style pre-norm MLP block with a residual
        @nn.compact
        def __call__(self, x):
            h = nn.LayerNorm()(x)
            return x + nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(8)(h)))

    class NnxRms(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.linear = nnx.Linear(5, 6, rngs=rngs)
            self.norm = nnx.RMSNorm(6, rngs=rngs)

        def __call__(self, x):
            return self.norm(self.linear(x))

    return (
        Case("linen-layernorm", lambda: nn.LayerNorm(), (6,)),
        Case("linen-layernorm-3d", lambda: nn.LayerNorm(), (5, 6)),
        Case("linen-layernorm-no-bias-eps", lambda: nn.LayerNorm(use_bias=False, epsilon=1e-3), (4, 6)),
        Case("linen-layernorm-no-scale", lambda: nn.LayerNorm(use_scale=False), (4, 6)),
        Case("linen-layernorm-no-affine", lambda: nn.LayerNorm(use_scale=False, use_bias=False), (4, 6)),
        Case("linen-layernorm-axes-12", lambda: nn.LayerNorm(reduction_axes=(1, 2), feature_axes=(1, 2)), (3, 4)),
        Case("linen-layernorm-axes-123-features-last",
             lambda: nn.LayerNorm(reduction_axes=(1, 2, 3), feature_axes=-1), (4, 4, 3)),
        Case("linen-layernorm-axis1", lambda: nn.LayerNorm(reduction_axes=1, feature_axes=1), (5, 3)),
        Case("linen-layernorm-rank5", lambda: nn.LayerNorm(), (2, 3, 2, 4)),
        Case("linen-layernorm-rank4-last", lambda: nn.LayerNorm(), (3, 4, 6)),  # rows of channels, tile-free
        Case("linen-layernorm-tiny-eps", lambda: nn.LayerNorm(epsilon=1e-12), (5, 6)),  # the scaled padded row
        Case("linen-layernorm-zero-eps", lambda: nn.LayerNorm(epsilon=0.0), (5, 6)),  # tfjs' own layer
        Case("linen-layernorm-block", DenseLN, (3, 6)),
        Case("linen-rmsnorm", lambda: nn.RMSNorm(), (6,)),
        Case("linen-rmsnorm-3d", lambda: nn.RMSNorm(epsilon=1e-5), (5, 6)),
        Case("linen-rmsnorm-no-scale", lambda: nn.RMSNorm(use_scale=False), (3, 6)),
        Case("linen-rmsnorm-rank5", lambda: nn.RMSNorm(), (2, 3, 2, 4)),
        Case("nnx-layernorm", lambda: nnx.LayerNorm(6, rngs=nnx.Rngs(0)), (6,)),
        Case("nnx-layernorm-3d-no-bias", lambda: nnx.LayerNorm(6, use_bias=False, rngs=nnx.Rngs(0)), (4, 6)),
        Case("nnx-rmsnorm", lambda: NnxRms(nnx.Rngs(0)), (5,)),
        Case("nnx-rmsnorm-3d", lambda: nnx.RMSNorm(6, rngs=nnx.Rngs(0)), (4, 6)),
    )


KIND = LayerKind(
    key="layernorm",
    keras_class="LayerNormalization",
    flax_modules=("nn.LayerNorm", "nnx.LayerNorm", "nn.RMSNorm", "nnx.RMSNorm"),
    make_config=layer_norm_config,
    params=(ParamMap("scale", "gamma", optional=True), ParamMap("bias", "beta", optional=True)),
    summary="layer normalization over the last axis without tfjs' tiling layer (broadcast Add/Multiply, "
            "Dot(normalize) for 1/sqrt(var + eps)); over other non-batch axes LayerNormalization, explicit epsilon, "
            "use_scale/use_bias -> scale/center; "
            "feature axis -1 with other reduction axes adds a per-channel affine; RMSNorm as the LayerNormalization "
            "of [x, -x] (Concatenate, Cropping2D)",
    flax_classes=("flax.linen:LayerNorm", "flax.nnx:LayerNorm", "flax.linen:RMSNorm", "flax.nnx:RMSNorm"),
    read_attrs=_read_attrs,
    expand=_expand,
    cases=_cases,
)
