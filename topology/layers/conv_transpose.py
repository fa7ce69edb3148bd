"""Flax ``nn.ConvTranspose`` / NNX ``nnx.ConvTranspose`` -> tfjs ``Conv2DTranspose`` / ``Conv3DTranspose``.

Flax computes ``lax.conv_transpose``: the input dilated by the strides, padded
by (lo, hi) per axis, correlated with the kernel K' (K itself, or K flipped and
in/out swapped when ``transpose_kernel=True``). tfjs' transpose scatters each
input cell through the kernel W (layout (k..., out, in)), which equals Flax's
"full" output (lo = k - 1) when W = flip(K') with in/out swapped; so
``transpose_kernel=True`` kernels are already in tfjs layout. Kernel dilation
(tfjs ignores ``dilation_rate`` here) becomes zeros inserted into the kernel,
which computes the same sums.

Flax's SAME and VALID are tfjs' 'same' and 'valid'. Any other padding is the
full output shifted and cut: a VALID transpose followed by Cropping2D (and
ZeroPadding2D plus a bias-add where Flax pads beyond the full output). 1-D
transposes run as 2-D ones between two Reshapes (tfjs has no Conv1DTranspose).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from topology.graph import LayerNode, WeightBinding
from topology.layers.base import ONES, ZEROS, Case, LayerKind, ParamMap, keras_shape, layer_base
from topology.layers.convolution import bias_variable, bias_weight, padding_pairs, per_axis
from topology.trace_kit.call_context import CallContext
from topology.trace_kit.errors import unsupported


def _config(filters: int, kernel_size: tuple[int, ...], strides: tuple[int, ...] | None = None,
            padding: str = "valid", use_bias: bool = True, activation: str = "linear") -> dict:
    ndim = len(kernel_size)
    return layer_base(
        filters=filters, kernel_size=list(kernel_size), strides=list(strides or (1,) * ndim),
        padding=padding, data_format="channels_last", dilation_rate=[1] * ndim,
        activation=activation, use_bias=use_bias,
        kernel_initializer=ZEROS, bias_initializer=ZEROS,
        kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
        kernel_constraint=None, bias_constraint=None,
    )


def _read_attrs(module: Any, context: CallContext) -> dict:
    kernel_size = module.kernel_size
    kernel_size = (kernel_size,) if isinstance(kernel_size, int) else tuple(int(k) for k in kernel_size)
    ndim = len(kernel_size)
    filters = module.features if hasattr(module, "features") else module.out_features
    mask = getattr(module, "mask", None)
    return {
        "filters": int(filters), "kernel_size": kernel_size, "strides": per_axis(module.strides, ndim),
        "padding": module.padding, "use_bias": bool(module.use_bias),
        "_dilation": per_axis(module.kernel_dilation, ndim),
        "_transpose_kernel": bool(module.transpose_kernel),
        "_mask": None if mask is None else np.asarray(mask),
    }


def flax_padding(padding: Any, kernel: int, stride: int) -> tuple[int, int]:
    """The (lo, hi) padding of the stride-dilated input, as ``lax.conv_transpose`` computes it.

    ``kernel`` is the dilated kernel size. Example:
        >>> flax_padding("SAME", 3, 2), flax_padding("VALID", 3, 2), flax_padding((1, 0), 3, 2)
        ((2, 1), (2, 2), (1, 0))
    """
    if padding == "SAME":
        total = kernel + stride - 2
        low = kernel - 1 if stride > kernel - 1 else math.ceil(total / 2)
        return low, total - low
    if padding == "VALID":
        return kernel - 1, kernel + stride - 2 + max(kernel - stride, 0) - (kernel - 1)
    return tuple(padding)


def _pads(padding: Any, kernels: tuple[int, ...], strides: tuple[int, ...], origin: str) -> list[tuple[int, int]]:
    ndim = len(kernels)
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise unsupported(f"a transposed convolution with padding={padding!r}", origin,
                              "use padding='SAME', 'VALID' or explicit (low, high) pairs")
        return [flax_padding(padding.upper(), k, s) for k, s in zip(kernels, strides)]
    return [flax_padding(p, k, s) for p, k, s in zip(padding_pairs(padding, ndim), kernels, strides)]


def kernel_transform(transpose_kernel: bool, dilation: tuple[int, ...], mask: np.ndarray | None,
                     as_2d: bool = False):
    """Flax kernel -> tfjs transpose kernel (k_dilated..., out, in).

    Example:
        >>> k = np.arange(6.0).reshape(3, 1, 2)                      # (k, in, out)
        >>> kernel_transform(False, (1,), None)(k)[:, 0, 0].tolist()  # flipped, out 0 <- in 0
        [4.0, 2.0, 0.0]
    """
    def transform(kernel: np.ndarray) -> np.ndarray:
        spatial = tuple(range(kernel.ndim - 2))
        if mask is not None:
            kernel = kernel * mask
        # K' = the kernel Flax correlates the dilated input with.
        correlated = np.flip(kernel, spatial).swapaxes(-1, -2) if transpose_kernel else kernel
        if any(d != 1 for d in dilation):
            sizes = [(k - 1) * d + 1 for k, d in zip(correlated.shape[:-2], dilation)]
            dilated = np.zeros((*sizes, *correlated.shape[-2:]), dtype=correlated.dtype)
            dilated[tuple(slice(None, None, d) for d in dilation)] = correlated
            correlated = dilated
        out = np.flip(correlated, spatial).swapaxes(-1, -2)
        return out[:, None] if as_2d else out

    return transform


def _expand(kind: LayerKind, name: str, attrs: dict, inputs: list[str], variables: dict, origin: str,
            output_shape: Any) -> list[LayerNode]:
    kernel_size, strides, dilation = attrs["kernel_size"], attrs["strides"], attrs["_dilation"]
    ndim = len(kernel_size)
    in_shape, out_shape = tuple(attrs["_input_shapes"][0]), tuple(attrs["_output_shape"])
    if len(in_shape) != ndim + 2:
        raise unsupported(f"a transposed convolution on a {len(in_shape)}-D input", origin,
                          f"give it (batch, {ndim} spatial axes, channels)")
    if ndim not in (1, 2, 3):
        raise unsupported(f"a {ndim}-D transposed convolution", origin, "use 1-D, 2-D or 3-D")
    kernels = tuple((k - 1) * d + 1 for k, d in zip(kernel_size, dilation))
    pads = _pads(attrs["padding"], kernels, strides, origin)
    sizes, out_sizes = in_shape[1:-1], out_shape[1:-1]
    # Flax's output = tfjs' VALID output cut from `start` (negative: zeros before it) to `end` from its end.
    valid = [n * s + max(k - s, 0) for n, s, k in zip(sizes, strides, kernels)]
    start = [k - 1 - lo for k, (lo, _) in zip(kernels, pads)]
    end = [v - b - m for v, b, m in zip(valid, start, out_sizes)]
    if all(b == 0 and e == 0 for b, e in zip(start, end)):
        mode = "valid"
    elif all(b == max(k - s, 0) // 2 and m == n * s  # tfjs 'same': n * s cells from floor((k - s) / 2)
             for b, k, s, m, n in zip(start, kernels, strides, out_sizes, sizes)):
        mode = "same"
    else:
        mode = "explicit"
    if mode == "explicit" and ndim == 3:
        raise unsupported("explicit padding in a 3-D transposed convolution", origin,
                          "use padding='SAME' or 'VALID' (tfjs has no Cropping3D / ZeroPadding3D)")

    filters, use_bias = attrs["filters"], attrs["use_bias"]
    kernel = variables.get(("params", "kernel"))
    if kernel is None:
        raise KeyError(f"params/{origin}/kernel")
    bias = bias_variable(variables, origin, use_bias)
    grows = mode == "explicit" and any(b < 0 for b in start + end)  # Flax pads past the full output
    as_2d = ndim == 1
    nodes: list[LayerNode] = []
    source = list(inputs)
    if as_2d:  # (length, C) -> (length, 1, C): a 2-D transpose with a (k, 1) kernel
        nodes.append(LayerNode(f"{name}.as_2d", "Reshape", layer_base(target_shape=[sizes[0], 1, in_shape[-1]]),
                               source, [], (sizes[0], 1, in_shape[-1]), origin))
        source = [nodes[-1].name]
        kernels, strides, valid, start, end = (*kernels, 1), (*strides, 1), [*valid, 1], [*start, 0], [*end, 0]
    transform = kernel_transform(attrs["_transpose_kernel"], dilation, attrs.get("_mask"), as_2d)
    weights = [WeightBinding("kernel", keras_shape(kernel, transform), kernel, transform)]
    conv_bias = bias is not None and not grows
    if conv_bias:
        weights.append(bias_weight(bias))
    conv_mode = "valid" if mode == "explicit" else mode
    conv_sizes = valid if conv_mode == "valid" else [n * s for n, s in zip(sizes + ((1,) if as_2d else ()), strides)]
    spatial = len(kernels)
    nodes.append(LayerNode(name, f"Conv{spatial}DTranspose",
                           _config(filters, kernels, strides, conv_mode, conv_bias), source, weights,
                           (*conv_sizes, filters), origin))
    if mode == "explicit":
        crop = [[max(b, 0), max(e, 0)] for b, e in zip(start, end)]
        sizes_now = [v - b - e for v, (b, e) in zip(valid, crop)]
        if any(c for pair in crop for c in pair):
            nodes.append(LayerNode(f"{name}.crop", "Cropping2D", layer_base(cropping=crop, data_format="channels_last"),
                                   [nodes[-1].name], [], (*sizes_now, filters), origin))
        if grows:
            pad = [[max(-b, 0), max(-e, 0)] for b, e in zip(start, end)]
            sizes_now = [m + lo + hi for m, (lo, hi) in zip(sizes_now, pad)]
            nodes.append(LayerNode(f"{name}.pad", "ZeroPadding2D", layer_base(padding=pad, data_format="channels_last"),
                                   [nodes[-1].name], [], (*sizes_now, filters), origin))
            if bias is not None:  # Flax adds the bias on the padded cells too: a 1x1 depthwise conv of ones
                nodes.append(_bias_add(f"{name}.bias", nodes[-1].name, bias, filters, (*sizes_now, filters), origin))
    if as_2d:
        nodes.append(LayerNode(f"{name}.as_1d", "Reshape", layer_base(target_shape=list(out_shape[1:])),
                               [nodes[-1].name], [], tuple(out_shape[1:]), origin))
    return nodes


def _bias_add(name: str, source: str, bias: Any, channels: int, shape: tuple, origin: str) -> LayerNode:
    config = layer_base(
        kernel_size=[1, 1], strides=[1, 1], padding="valid", depth_multiplier=1, data_format="channels_last",
        dilation_rate=[1, 1], activation="linear", use_bias=True, depthwise_initializer=ONES,
        bias_initializer=ZEROS, depthwise_regularizer=None, bias_regularizer=None, activity_regularizer=None,
        depthwise_constraint=None, bias_constraint=None,
    )
    ones = np.ones((1, 1, channels, 1), np.float32)
    weights = [WeightBinding("depthwise_kernel", ones.shape, constant=ones),
               bias_weight(bias)]
    return LayerNode(name, "DepthwiseConv2D", config, [source], weights, shape, origin)


def _cases():
    import flax.linen as nn
    from flax import nnx

    T = nn.ConvTranspose  # noqa: N806 - short alias keeps the table readable
    tril = np.tril(np.ones((3, 3, 4), np.float32))  # a mask of the (k, in, out) kernel

    def nnx_t(*args, **kwargs):
        return nnx.ConvTranspose(*args, rngs=nnx.Rngs(0), **kwargs)

    return (
        Case("linen-convT2d-same-stride2", lambda: T(4, (3, 3), strides=(2, 2)), (5, 5, 3)),
        Case("linen-convT2d-valid-stride2", lambda: T(3, (3, 3), strides=(2, 2), padding="VALID"), (4, 5, 2)),
        Case("linen-convT2d-same-even-kernel", lambda: T(3, (4, 4), strides=(2, 2)), (4, 4, 2)),
        Case("linen-convT2d-kernel-smaller-than-stride", lambda: T(3, (2, 2), strides=(3, 3), padding="VALID"),
             (3, 4, 2)),
        Case("linen-convT2d-same-stride1", lambda: T(3, (3, 3)), (5, 5, 2)),
        Case("linen-convT2d-transpose-kernel", lambda: T(4, (3, 3), strides=(2, 2), transpose_kernel=True), (5, 5, 3)),
        Case("linen-convT2d-transpose-kernel-valid",
             lambda: T(2, (3, 2), strides=(2, 1), padding="VALID", transpose_kernel=True), (4, 5, 3)),
        Case("linen-convT2d-explicit-crop", lambda: T(3, (3, 3), strides=(2, 2), padding=((1, 2), (0, 1))), (4, 4, 2)),
        Case("linen-convT2d-explicit-grow", lambda: T(3, (3, 3), strides=(2, 2), padding=((3, 4), (1, 0))), (3, 3, 2)),
        Case("linen-convT2d-explicit-grow-no-bias", lambda: T(3, (2, 2), padding=2, use_bias=False), (3, 3, 2)),
        Case("linen-convT2d-dilated", lambda: T(3, (3, 3), strides=(2, 2), kernel_dilation=(2, 1)), (4, 4, 2)),
        Case("linen-convT2d-no-bias", lambda: T(3, (3, 3), strides=2, use_bias=False), (4, 4, 2)),
        Case("linen-convT1d-same", lambda: T(4, (3,), strides=(2,)), (6, 3)),
        Case("linen-convT1d-valid-dilated", lambda: T(2, 3, padding="VALID", kernel_dilation=2), (6, 3)),
        Case("linen-convT1d-explicit", lambda: T(2, (4,), strides=(2,), padding=((1, 3),), transpose_kernel=True),
             (5, 2)),
        Case("linen-convT1d-masked", lambda: T(4, (3,), mask=tril), (6, 3)),
        Case("linen-convT3d-same", lambda: T(2, (2, 3, 2), strides=(2, 1, 2)), (3, 3, 2, 2)),
        Case("linen-convT3d-valid", lambda: T(2, (2, 2, 2), strides=(2, 2, 2), padding="VALID"), (2, 3, 2, 3)),
        Case("nnx-convT2d-same-stride2", lambda: nnx_t(3, 4, (3, 3), strides=(2, 2)), (5, 5, 3)),
        Case("nnx-convT2d-transpose-kernel-explicit",
             lambda: nnx_t(2, 3, (3, 3), strides=2, padding=((2, 1), (1, 1)), transpose_kernel=True), (4, 4, 2)),
        Case("nnx-convT1d-valid", lambda: nnx_t(3, 2, (3,), strides=2, padding="VALID"), (5, 3)),
    )


KIND = LayerKind(
    key="conv_transpose",
    keras_class=lambda attrs: f"Conv{max(2, len(attrs['kernel_size']))}DTranspose",
    flax_modules=("nn.ConvTranspose", "nnx.ConvTranspose"),
    make_config=_config,
    params=(ParamMap("kernel", "kernel"), ParamMap("bias", "bias", optional=True)),
    summary="transposed convolution (1-D via Reshape to 2-D, 2-D, 3-D): strides, SAME/VALID, explicit padding "
            "(1-D/2-D: Cropping2D / ZeroPadding2D), kernel_dilation (zeros in the kernel), transpose_kernel, mask",
    flax_classes=("flax.linen:ConvTranspose", "flax.nnx:ConvTranspose"),
    read_attrs=_read_attrs,
    expand=_expand,
    cases=_cases,
)
