"""Fold an inference BatchNormalization into the Dense/Conv/DepthwiseConv2D before it.

``gamma (y - mean) / sqrt(var + eps) + beta`` is ``y * s + t`` per channel with
``s = gamma / sqrt(var + eps)`` and ``t = beta - mean s``; see
:mod:`topology.optimize.affine` for how it enters the kernel and bias. Only when
the BatchNorm is the sole reader of the layer's output, the layer's activation
is linear, and the BatchNorm normalizes the last (channel) axis.
"""
from __future__ import annotations

import numpy as np

from topology.graph import LayerGraph, LayerNode
from topology.layers.base import Case
from topology.optimize.affine import fold_affine, foldable, out_channels
from topology.optimize.base import Rewrite, bypass, find, record, sole_reader, tensor_shape

KEY = "fold_batchnorm"


def _last_axis(graph: LayerGraph, bn: LayerNode) -> bool:
    axis = bn.config.get("axis", -1)
    if isinstance(axis, list):
        axis = axis[0] if len(axis) == 1 else None
    shape = tensor_shape(graph, bn.inputs[0])
    return axis == -1 or (shape is not None and axis == len(shape))


def _affine(epsilon: float):
    def affine(src: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        gamma = src.get("gamma", 1.0)
        beta = src.get("beta", 0.0)
        scale = gamma / np.sqrt(src["moving_variance"] + epsilon)
        return scale, beta - src["moving_mean"] * scale

    return affine


def apply(graph: LayerGraph) -> list[dict]:
    applied = []
    for bn in list(graph.layers):
        if bn.class_name != "BatchNormalization" or len(bn.inputs) != 1 or not _last_axis(graph, bn):
            continue
        producer = find(graph, bn.inputs[0])
        if producer is None or not foldable(producer) or not sole_reader(graph, producer.name, bn):
            continue
        sources = {w.name: w for w in bn.weights}
        if not {"moving_mean", "moving_variance"} <= set(sources) or \
                any(tuple(w.shape) != (out_channels(producer),) for w in sources.values()):
            continue
        if not bypass(graph, bn, producer.name):
            continue
        fold_affine(producer, KEY, sources, _affine(float(bn.config.get("epsilon", 1e-3))))
        applied.append(record(KEY, bn.name, producer.name))
    return applied


def _cases():
    import flax.linen as nn
    from flax import nnx

    class ConvBNReLU(nn.Module):  # conv without bias -> BN -> relu: the bias is created
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(6, (3, 3), use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
            x = nn.Conv(4, (3, 3), strides=2, padding="VALID")(x)
            x = nn.BatchNorm(use_running_average=not train, epsilon=1e-3)(x)
            return nn.Dense(3)(x.reshape((x.shape[0], -1)))

    class DenseBN(nn.Module):  # BN without scale/center after a Dense; a BN on the input stays
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.Dense(6)(x)
            return nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False)(x)

    class Conv1D3D(nn.Module):  # 1-D and 3-D convolutions
        @nn.compact
        def __call__(self, x, train: bool = False):
            y = nn.BatchNorm(use_running_average=not train)(nn.Conv(3, (3,))(x))
            z = nn.Conv(2, (2, 2, 2), padding="VALID")(y.reshape((y.shape[0], 4, 2, 2, 3)))
            return nn.BatchNorm(use_running_average=not train)(z)

    class Depthwise(nn.Module):  # depthwise with multiplier 2 -> BN
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(6, (3, 3), feature_group_count=3, use_bias=False)(x)
            return nn.BatchNorm(use_running_average=not train)(x)

    class NnxConvBN(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)

        def __call__(self, x):
            return nnx.relu(self.bn(self.conv(x)))

    return (Case("linen-conv-bn-relu", ConvBNReLU, (8, 8, 3)),
            Case("linen-dense-bn", DenseBN, (5,)),
            Case("linen-conv1d-conv3d-bn", Conv1D3D, (16, 2)),
            Case("linen-depthwise-bn", Depthwise, (6, 6, 3)),
            Case("nnx-conv-bn", lambda: NnxConvBN(nnx.Rngs(0)), (6, 6, 3)))


REWRITE = Rewrite(KEY, "fold inference BatchNorm into the preceding Dense/Conv1D/2D/3D/DepthwiseConv2D kernel and bias",
                  apply, _cases)
