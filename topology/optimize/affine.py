"""Fold a per-channel affine map ``y * s + t`` into the linear layer that produces ``y``.

Shared by :mod:`fold_batchnorm` and :mod:`fold_rescaling`. For a Dense or a
convolution with a linear activation, ``layer(x) * s + t`` is the same layer
with its kernel's output channels scaled by ``s`` and bias ``b * s + t``
(zero padding stays zero, so convolutions fold exactly too). The new kernel and
bias are :class:`Derived` weights: computed in float64 from the original
tensors when the writer reaches them, then cast to float32, deterministically.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from topology.graph import Derived, LayerNode, WeightBinding
from topology.layers import REGISTRY
from topology.layers.base import FoldTarget
from topology.registry import Registry


def fold_targets() -> Registry[FoldTarget]:
    """The Keras layers an affine map folds into, by class, as the layer kinds declare them (``fold_targets``);
    a class declared twice is refused.

    Example:
        >>> fold_targets()["DepthwiseConv2D"].kernel, fold_targets().owners["Dense"]
        ('depthwise_kernel', 'dense')
    """
    targets: Registry[FoldTarget] = Registry("fold target")
    for layer_kind in REGISTRY.values():
        for target in layer_kind.fold_targets:
            targets.add(target.keras_class, target, layer_kind.key)
    return targets


FOLDABLE = fold_targets()

# (named source arrays) -> (scale, shift), each broadcastable to (channels,), in float64.
AffineFn = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


def foldable(layer: LayerNode) -> bool:
    """True when ``layer`` is a Dense/Conv/DepthwiseConv2D with a linear activation and its kernel bound.

    Example:
        >>> foldable(LayerNode("d", "Dense", {"activation": "relu"}))
        False
    """
    target = FOLDABLE.get(layer.class_name)
    return target is not None and layer.config.get("activation", "linear") == "linear" \
        and any(w.name == target.kernel for w in layer.weights)


def out_channels(layer: LayerNode) -> int:
    """How many output channels ``layer`` (a foldable one) has."""
    target = FOLDABLE[layer.class_name]
    return int(math.prod(_binding(layer, target.kernel).shape[-target.channel_axes:]))


def fold_affine(layer: LayerNode, label: str, sources: dict[str, WeightBinding], affine: AffineFn) -> None:
    """Replace ``layer``'s kernel and bias by derived ones that include the affine map.

    A layer without a bias gets one (``use_bias`` becomes true).

    Example:
        >>> k = WeightBinding("kernel", (2, 2), constant=np.eye(2, dtype="float32"))
        >>> d = LayerNode("d", "Dense", {"units": 2, "use_bias": False, "activation": "linear"}, weights=[k])
        >>> fold_affine(d, "scale", {}, lambda src: (np.array([2.0, 3.0]), np.array([1.0, 0.0])))
        >>> [(w.name, w.materialize().tolist()) for w in d.weights]
        [('kernel', [[2.0, 0.0], [0.0, 3.0]]), ('bias', [1.0, 0.0])]
    """
    target = FOLDABLE[layer.class_name]
    kernel_name = target.kernel
    kernel = _binding(layer, kernel_name)
    bias = next((w for w in layer.weights if w.name == "bias"), None)
    names = tuple(sources)
    channels = out_channels(layer)
    depthwise = kernel.shape[-target.channel_axes:] if target.channel_axes > 1 else None

    def scale_shift(arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        scale, shift = affine({n: np.asarray(a, np.float64) for n, a in zip(names, arrays)})
        return (np.broadcast_to(np.asarray(scale, np.float64), (channels,)),
                np.broadcast_to(np.asarray(shift, np.float64), (channels,)))

    def new_kernel(k: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
        scale = scale_shift(arrays)[0]
        if depthwise is not None:
            scale = scale.reshape(depthwise)  # (C, m): output channel c*m + j
        return (np.asarray(k, np.float64) * scale).astype(np.float32)

    def new_bias(*arrays: np.ndarray) -> np.ndarray:
        b = np.asarray(arrays[0], np.float64) if bias is not None else np.zeros(channels)
        scale, shift = scale_shift(arrays[1:] if bias is not None else arrays)
        return (b * scale + shift).astype(np.float32)

    inputs = tuple(sources.values())
    folded_kernel = WeightBinding(kernel_name, kernel.shape, derived=Derived(label, (kernel, *inputs), new_kernel))
    bias_inputs = ((bias,) if bias is not None else ()) + inputs
    folded_bias = WeightBinding("bias", (channels,), derived=Derived(label, bias_inputs, new_bias))
    others = [w for w in layer.weights if w.name not in (kernel_name, "bias")]
    layer.weights = [folded_kernel, folded_bias, *others]
    layer.config = {**layer.config, "use_bias": True}


def _binding(layer: LayerNode, name: str) -> WeightBinding:
    return next(w for w in layer.weights if w.name == name)
