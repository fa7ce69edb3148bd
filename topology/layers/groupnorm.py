"""Flax ``nn.GroupNorm`` / NNX ``nnx.GroupNorm``, composed from tfjs layers (tfjs has no GroupNormalization).

Group normalization of x (batch, ..., C) with G groups is layer normalization
of x viewed as (batch, positions, G, C / G) over the positions and the
in-group channels (axes 1 and 3), without affine. So: Reshape -> LayerNormalization
(axis [1, 3], center/scale off, Flax's epsilon) -> Reshape back -> the per-channel
scale and bias as a BatchNormalization with mean 0, variance 1 and epsilon 0,
which is exactly ``x * scale + bias``. ``reduction_axes=-1`` (statistics per
position) normalizes over axis 3 only.
"""
from __future__ import annotations

import math
from typing import Any

from topology.graph import LayerNode
from topology.layers.base import Case, LayerKind, ParamMap
from topology.layers.batchnorm import channel_affine
from topology.layers.layernorm import canonical_axes, layer_norm_config
from topology.layers.views import reshape_node
from topology.trace_kit.call_context import CallContext
from topology.trace_kit.errors import unsupported


def _read_attrs(module: Any, context: CallContext) -> dict:
    return {
        "epsilon": float(module.epsilon), "_use_bias": bool(module.use_bias), "_use_scale": bool(module.use_scale),
        "_num_groups": module.num_groups, "_group_size": module.group_size,
        "_reduction_axes": module.reduction_axes, "_nnx": type(module).__module__.startswith("flax.nnx"),
    }


def _groups(attrs: dict, channels: int, origin: str) -> int:
    groups, size = attrs["_num_groups"], attrs["_group_size"]
    if groups is None and size:  # Linen keeps the one the user gave; NNX both
        groups = channels // int(size)
    if not groups or channels % int(groups):
        raise unsupported(f"GroupNorm {origin} with {groups} groups of {channels} channels", origin,
                          "use a number of groups that divides the channels")
    return int(groups)


def _expand(kind: LayerKind, name: str, attrs: dict, inputs: list[str], variables: dict, origin: str,
            output_shape: Any) -> list[LayerNode]:
    in_shape = tuple(attrs["_input_shapes"][0])
    rank, channels = len(in_shape), in_shape[-1]
    groups = _groups(attrs, channels, origin)
    every = tuple(range(1, rank))
    reduce = every if attrs["_reduction_axes"] is None else canonical_axes(attrs["_reduction_axes"], rank)
    if reduce == every:
        axes = [1, 3]  # positions and channels within the group
    elif attrs["_nnx"]:  # flax 0.12's nnx.GroupNorm repeats the statistics along axis 1, not per group
        raise unsupported(f"nnx.GroupNorm {origin} with reduction_axes {reduce}", origin,
                          "nnx.GroupNorm computes something else than nn.GroupNorm for non-default "
                          "reduction_axes; use the default (all non-batch axes)")
    elif reduce == (rank - 1,):
        axes = [3]  # per position: channels within the group only
    else:
        raise unsupported(f"GroupNorm {origin} with reduction_axes {reduce}", origin,
                          "use the default (all non-batch axes) or -1")
    positions = math.prod(in_shape[1:-1])
    grouped = (positions, groups, channels // groups)
    nodes = [
        reshape_node(f"{name}.groups", grouped, inputs, origin),
        LayerNode(f"{name}.norm", "LayerNormalization", layer_norm_config(axes, attrs["epsilon"], False, False),
                  [f"{name}.groups"], [], grouped, origin),
    ]
    features = tuple(in_shape[1:])
    # The affine runs on a rank <= 4 view: the input's own shape, or (positions, C) for deeper inputs.
    view = features if rank <= 4 else (positions, channels)
    nodes.append(reshape_node(f"{name}.ungroup", view, [nodes[-1].name], origin))
    affine = channel_affine(f"{name}.affine", view, [nodes[-1].name], variables, origin,
                            attrs["_use_scale"], attrs["_use_bias"])
    if affine is not None:
        nodes.append(affine)
    if view != features:
        nodes.append(reshape_node(name, features, [nodes[-1].name], origin))
    nodes[-1].name = name  # the output layer carries the module's name (nothing reads the last node yet)
    return nodes


def _cases() -> tuple[Case, ...]:
    import flax.linen as nn
    from flax import nnx

    class ConvGN(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.swish(nn.GroupNorm(num_groups=2)(nn.Conv(6, (3, 3))(x)))

    return (
        Case("linen-groupnorm-conv", ConvGN, (6, 6, 3)),
        Case("linen-groupnorm-2d", lambda: nn.GroupNorm(num_groups=4), (5, 5, 8)),
        Case("linen-groupnorm-1d", lambda: nn.GroupNorm(num_groups=3, epsilon=1e-5), (7, 6)),
        Case("linen-groupnorm-group-size", lambda: nn.GroupNorm(num_groups=None, group_size=2), (4, 4, 6)),
        Case("linen-groupnorm-vector", lambda: nn.GroupNorm(num_groups=2), (6,)),
        Case("linen-groupnorm-rank5", lambda: nn.GroupNorm(num_groups=2), (3, 2, 2, 4)),
        Case("linen-groupnorm-no-affine", lambda: nn.GroupNorm(num_groups=2, use_scale=False, use_bias=False), (4, 4)),
        Case("linen-groupnorm-no-scale", lambda: nn.GroupNorm(num_groups=2, use_scale=False), (4, 4)),
        Case("linen-groupnorm-per-position", lambda: nn.GroupNorm(num_groups=2, reduction_axes=-1), (5, 16)),
        Case("nnx-groupnorm", lambda: nnx.GroupNorm(8, num_groups=4, rngs=nnx.Rngs(0)), (5, 5, 8)),
        Case("nnx-groupnorm-1d", lambda: nnx.GroupNorm(6, num_groups=3, rngs=nnx.Rngs(0)), (7, 6)),
    )


KIND = LayerKind(
    key="groupnorm",
    keras_class="LayerNormalization",
    flax_modules=("nn.GroupNorm", "nnx.GroupNorm"),
    make_config=layer_norm_config,
    params=(ParamMap("scale", "gamma", optional=True), ParamMap("bias", "beta", optional=True)),
    summary="group normalization composed exactly: Reshape to (positions, groups, C/groups) -> LayerNormalization "
            "without affine -> Reshape -> per-channel scale/bias as BatchNormalization(mean 0, var 1, epsilon 0)",
    flax_classes=("flax.linen:GroupNorm", "flax.nnx:GroupNorm"),
    read_attrs=_read_attrs,
    expand=_expand,
    cases=_cases,
)
