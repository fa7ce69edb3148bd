"""Flax ``nn.Conv`` / NNX ``nnx.Conv`` (1-D, 2-D, 3-D) -> tfjs ``Conv1D/2D/3D``.

Flax kernels are (spatial..., in / groups, out), the Keras channels_last
layout. Padding 'SAME'/'VALID'/'CAUSAL' map by name; explicit 2-D padding
becomes ZeroPadding2D before a VALID conv. Depthwise 2-D convs
(feature_group_count == in channels) become DepthwiseConv2D; other grouped
convs (tfjs ignores ``groups``) become one conv with a block-diagonal kernel,
which computes the same sums.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from topology.graph import LayerNode, WeightBinding
from topology.layers.base import ZEROS, Case, FoldTarget, LayerKind, ParamMap, keras_shape, layer_base
from topology.layers.convolution import bias_variable, bias_weight, padding_pairs, per_axis
from topology.trace_kit.call_context import CallContext
from topology.trace_kit.errors import unsupported


def _config(
    filters: int,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...] | None = None,
    padding: Any = "same",
    dilation_rate: tuple[int, ...] | None = None,
    use_bias: bool = True,
    activation: str = "linear",
    groups: int = 1,
) -> dict:
    ndim = len(kernel_size)
    return layer_base(
        filters=filters, kernel_size=list(kernel_size),
        strides=list(strides or (1,) * ndim), padding=padding, data_format="channels_last",
        dilation_rate=list(dilation_rate or (1,) * ndim), groups=1,
        activation=activation, use_bias=use_bias,
        kernel_initializer=ZEROS, bias_initializer=ZEROS,
        kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
        kernel_constraint=None, bias_constraint=None,
    )


def _read_attrs(module: Any, context: CallContext) -> dict:
    kernel_size = module.kernel_size
    kernel_size = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
    ndim = len(kernel_size)
    filters = module.features if hasattr(module, "features") else module.out_features
    return {
        "filters": int(filters), "kernel_size": kernel_size,
        "strides": per_axis(module.strides, ndim), "padding": module.padding,
        "dilation_rate": per_axis(module.kernel_dilation, ndim), "use_bias": bool(module.use_bias),
        "groups": int(module.feature_group_count),
        "_input_dilation": per_axis(module.input_dilation, ndim),
    }


def _expand(kind: LayerKind, name: str, attrs: dict, inputs: list[str], variables: dict, origin: str,
            output_shape: Any) -> list[LayerNode]:
    ndim = len(attrs["kernel_size"])
    if any(d != 1 for d in attrs.get("_input_dilation", (1,) * ndim)):
        raise unsupported(f"convolution {origin} with input_dilation", origin, "use nn.ConvTranspose")
    in_shape = attrs["_input_shapes"][0]
    in_channels = in_shape[-1]
    padding = _padding(attrs["padding"], ndim, origin)
    if padding == "causal":  # tfjs 4.22 cannot run Conv1D 'causal': pad the past explicitly
        padding = [((attrs["kernel_size"][0] - 1) * attrs["dilation_rate"][0], 0)]
    nodes: list[LayerNode] = []
    if not isinstance(padding, str):
        if ndim == 3:
            raise unsupported(f"explicit padding in a 3-D convolution ({origin})", origin,
                              "use padding='SAME' or 'VALID' (tfjs has no ZeroPadding3D)")
        nodes += _zero_padding(name, padding, in_shape, inputs, origin)
        inputs, padding = [nodes[-1].name], "valid"
    config_attrs = {k: v for k, v in attrs.items() if not k.startswith("_")}
    config_attrs["padding"] = padding
    groups = config_attrs.pop("groups")
    kernel = variables[("params", "kernel")]
    bias = bias_variable(variables, origin)
    if groups == 1:
        nodes.append(kind.node(name, config_attrs, inputs, variables, origin, output_shape))
        return nodes
    multiplier = attrs["filters"] // in_channels
    if groups == in_channels and ndim == 2 and attrs["filters"] % in_channels == 0:
        config = layer_base(
            kernel_size=list(attrs["kernel_size"]), strides=list(attrs["strides"]), padding=padding,
            depth_multiplier=multiplier, data_format="channels_last", dilation_rate=list(attrs["dilation_rate"]),
            activation="linear", use_bias=bias is not None, depthwise_initializer=ZEROS, bias_initializer=ZEROS,
            depthwise_regularizer=None, bias_regularizer=None, activity_regularizer=None,
            depthwise_constraint=None, bias_constraint=None,
        )
        reshape = _depthwise_kernel(in_channels, multiplier)
        weights = [WeightBinding("depthwise_kernel", keras_shape(kernel, reshape), kernel, reshape)]
        if bias is not None:
            weights.append(bias_weight(bias))
        nodes.append(LayerNode(name, "DepthwiseConv2D", config, inputs, weights, output_shape, origin))
        return nodes
    expand = _block_diagonal(groups, in_channels)
    weights = [WeightBinding("kernel", keras_shape(kernel, expand), kernel, expand)]
    if bias is not None:
        weights.append(bias_weight(bias))
    nodes.append(LayerNode(name, f"Conv{ndim}D", kind.make_config(**config_attrs), inputs, weights, output_shape, origin))
    return nodes


def _zero_padding(name: str, pads: list, in_shape: tuple, inputs: list[str], origin: str) -> list[LayerNode]:
    """ZeroPadding2D, wrapped in Reshapes for 1-D inputs (tfjs has no ZeroPadding1D)."""
    config = lambda p: layer_base(padding=[list(x) for x in p], data_format="channels_last")  # noqa: E731
    # A LayerNode's output_shape leaves out the batch axis (in_shape has it).
    if len(pads) == 2:
        padded_2d = tuple(d + lo + hi for d, (lo, hi) in zip(in_shape[1:3], pads))
        return [LayerNode(f"{name}.pad", "ZeroPadding2D", config(pads), list(inputs), [], (*padded_2d, in_shape[3]),
                          origin)]
    length, channels = in_shape[1], in_shape[2]
    padded = length + pads[0][0] + pads[0][1]
    return [
        LayerNode(f"{name}.as_2d", "Reshape", layer_base(target_shape=[length, 1, channels]), list(inputs), [],
                  (length, 1, channels), origin),
        LayerNode(f"{name}.pad", "ZeroPadding2D", config([pads[0], (0, 0)]), [f"{name}.as_2d"], [],
                  (padded, 1, channels), origin),
        LayerNode(f"{name}.as_1d", "Reshape", layer_base(target_shape=[padded, channels]), [f"{name}.pad"], [],
                  (padded, channels), origin),
    ]


def _padding(padding: Any, ndim: int, origin: str) -> Any:
    if isinstance(padding, str):
        name = padding.upper()
        if name in ("SAME", "VALID", "CAUSAL"):
            return name.lower()
        raise unsupported(f"padding={padding!r} in {origin}", origin, "use 'SAME', 'VALID', 'CAUSAL' or explicit pairs")
    pairs = padding_pairs(padding, ndim)
    if all(p == (0, 0) for p in pairs):
        return "valid"
    return pairs


def _depthwise_kernel(channels: int, multiplier: int):
    # Flax (kh, kw, 1, C*m), output channel c*m + j  ->  Keras (kh, kw, C, m).
    return lambda k: k.reshape(*k.shape[:-2], channels, multiplier)


def _block_diagonal(groups: int, in_channels: int):
    def expand(kernel: np.ndarray) -> np.ndarray:
        per_in, out = kernel.shape[-2], kernel.shape[-1]
        per_out = out // groups
        full = np.zeros((*kernel.shape[:-2], in_channels, out), dtype=kernel.dtype)
        if kernel.strides and 0 in kernel.strides:  # a zero-stride view used only for its shape
            return np.broadcast_to(np.zeros((), kernel.dtype), full.shape)
        for g in range(groups):
            full[..., g * per_in:(g + 1) * per_in, g * per_out:(g + 1) * per_out] = \
                kernel[..., :, g * per_out:(g + 1) * per_out]
        return full

    return expand


def _cases():
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class WeightNormConv(nn.Module):  # transformers' FlaxWav2Vec2WeightNormConv1D (positional conv)
        pad: bool = False

        def setup(self):
            self.conv = nn.Conv(4, (3,), padding="VALID" if self.pad else "SAME", feature_group_count=2)
            self.weight_v = self.param("weight_v", jax.nn.initializers.he_normal(), (4, 2, 3))
            self.weight_g = self.param("weight_g", nn.initializers.ones, (1, 1, 3))
            self.bias = self.param("bias", nn.initializers.zeros, (4,))

        def __call__(self, x):
            kernel = self.weight_v / jnp.linalg.norm(self.weight_v, axis=(0, 1))[None, None, :] * self.weight_g
            if self.pad:
                x = jnp.pad(x, ((0, 0), (1, 1), (0, 0)))
            return self.conv.apply({"params": {"kernel": kernel.T, "bias": self.bias}}, x)

    return (
        Case("linen-weight-norm-conv1d-computed-kernel", WeightNormConv, (7, 4)),
        Case("linen-conv2d-same", lambda: nn.Conv(4, (3, 3)), (8, 8, 3)),
        Case("linen-conv2d-valid-stride2", lambda: nn.Conv(4, (3, 3), strides=2, padding="VALID"), (9, 9, 2)),
        Case("linen-conv2d-same-stride2-even", lambda: nn.Conv(3, (4, 4), strides=(2, 2)), (8, 8, 2)),
        Case("linen-conv2d-explicit-padding", lambda: nn.Conv(4, (3, 3), padding=((2, 1), (0, 1))), (7, 7, 2)),
        Case("linen-conv2d-dilated", lambda: nn.Conv(4, (3, 3), kernel_dilation=2), (9, 9, 2)),
        Case("linen-conv2d-no-bias", lambda: nn.Conv(4, (1, 1), use_bias=False), (5, 5, 3)),
        Case("linen-conv2d-depthwise", lambda: nn.Conv(6, (3, 3), feature_group_count=3), (8, 8, 3)),
        Case("linen-conv2d-grouped", lambda: nn.Conv(6, (3, 3), feature_group_count=2), (8, 8, 4)),
        Case("linen-conv1d", lambda: nn.Conv(5, (3,)), (10, 2)),
        Case("linen-conv1d-causal", lambda: nn.Conv(3, (3,), padding="CAUSAL"), (10, 2)),
        Case("linen-conv1d-depthwise", lambda: nn.Conv(4, (3,), feature_group_count=4), (10, 4)),
        Case("linen-conv3d", lambda: nn.Conv(3, (2, 2, 2), padding="VALID"), (5, 5, 5, 2)),
        Case("nnx-conv2d", lambda: nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)), (8, 8, 3)),
        Case("nnx-conv2d-depthwise", lambda: nnx.Conv(4, 8, (3, 3), feature_group_count=4, rngs=nnx.Rngs(0)), (6, 6, 4)),
    )



KIND = LayerKind(
    key="conv",
    keras_class=lambda attrs: f"Conv{len(attrs['kernel_size'])}D",
    flax_modules=("nn.Conv", "nnx.Conv"),
    make_config=_config,
    params=(ParamMap("kernel", "kernel"), ParamMap("bias", "bias", optional=True)),
    summary="N-d convolution (N = 1, 2, 3): strides, dilation, SAME/VALID/CAUSAL/explicit 1-D and 2-D padding, "
            "depthwise (DepthwiseConv2D) and grouped (block-diagonal kernel)",
    flax_classes=("flax.linen:Conv", "flax.nnx:Conv"),
    read_attrs=_read_attrs,
    expand=_expand,
    fold_targets=(FoldTarget("Conv1D"), FoldTarget("Conv2D"), FoldTarget("Conv3D"),
                  FoldTarget("DepthwiseConv2D", "depthwise_kernel", channel_axes=2)),
    cases=_cases,
)
