"""Fuse an activation layer into the ``activation`` field of the layer before it.

``Activation(f)`` (f any tfjs activation: the layer and the field use the same
tfjs function) and ``ReLU`` with no slope or threshold (max None -> ``relu``,
max 6 -> ``relu6``) after a Dense/Conv/DepthwiseConv2D/SeparableConv2D/
Conv2DTranspose whose activation is linear and whose only reader it is. tfjs
then runs the activation inside the layer (fused into the matmul/conv kernel
for relu, relu6, sigmoid, ... on cpu and wasm).
"""
from __future__ import annotations

from topology.graph import LayerGraph, LayerNode
from topology.layers.base import Case
from topology.optimize.base import Rewrite, bypass, find, record, sole_reader

KEY = "fuse_activation"
PRODUCERS = ("Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose",
             "Conv3DTranspose")


def activation_of(layer: LayerNode) -> str | None:
    """The activation name ``layer`` computes, when it is an activation layer that can be a field.

    Example:
        >>> activation_of(LayerNode("r", "ReLU", {"max_value": 6.0, "negative_slope": 0.0, "threshold": 0.0}))
        'relu6'
    """
    config = layer.config
    if layer.class_name == "Activation":
        name = config.get("activation")
        return name if isinstance(name, str) and name != "linear" else None
    if layer.class_name == "ReLU" and not config.get("negative_slope") and not config.get("threshold"):
        cap = config.get("max_value")
        return "relu" if cap is None else "relu6" if float(cap) == 6.0 else None
    return None


def apply(graph: LayerGraph) -> list[dict]:
    applied = []
    for act in list(graph.layers):
        name = activation_of(act)
        if name is None or len(act.inputs) != 1:
            continue
        producer = find(graph, act.inputs[0])
        if producer is None or producer.class_name not in PRODUCERS or \
                producer.config.get("activation", "linear") != "linear" or not sole_reader(graph, producer.name, act):
            continue
        if bypass(graph, act, producer.name):
            producer.config = {**producer.config, "activation": name}
            applied.append(record(KEY, act.name, producer.name, activation=name))
    return applied


def _cases():
    import flax.linen as nn
    import jax

    class Activations(nn.Module):  # relu, relu6, tanh, sigmoid, gelu (exact) and softmax after layers
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3))(x))
            x = nn.relu6(nn.Conv(4, (3, 3), feature_group_count=4)(x))
            x = jax.nn.gelu(nn.Conv(3, (1, 1))(x), approximate=False)
            x = x.reshape((x.shape[0], -1))
            x = nn.tanh(nn.Dense(6)(x))
            x = nn.sigmoid(nn.Dense(5)(x))
            return nn.softmax(nn.Dense(3)(x))

    class SharedOutput(nn.Module):  # the Dense output is also read by another Dense: relu must stay a layer
        @nn.compact
        def __call__(self, x):
            y = nn.Dense(4)(x)
            return nn.Dense(3)(nn.relu(y)) + nn.Dense(3)(y)

    return (Case("linen-activations-after-layers", Activations, (6, 6, 2), input_range=(-3.0, 3.0)),
            Case("linen-shared-output-not-fused", SharedOutput, (4,)))


REWRITE = Rewrite(KEY, "fuse a following activation layer into the producer's activation field", apply, _cases)
