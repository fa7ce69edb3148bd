"""Drop layers that return their input unchanged at inference.

``Dropout`` (tfjs' ``predict`` never drops), a ``linear`` ``Activation``,
``Rescaling`` with scale 1 and offset 0, a ``Reshape`` to the shape it already
has, a ``Flatten`` of an already flat tensor and a ``Permute`` that keeps the
order. Their readers read the layer's input instead. Not dropped when a reader
would then list one tensor twice: the identity Rescaling copies the tracer
writes exist to avoid exactly that (tfjs 4.22 disposes such a tensor early).
"""
from __future__ import annotations

from topology.graph import LayerGraph, LayerNode
from topology.layers.base import Case
from topology.optimize.base import Rewrite, bypass, record, tensor_shape

KEY = "drop_identity"


def is_identity(graph: LayerGraph, layer: LayerNode) -> bool:
    """True when ``layer`` returns its (single) input unchanged.

    Example:
        >>> from topology.graph import InputSpec
        >>> g = LayerGraph([InputSpec("x", (4, 2))], [], [])
        >>> is_identity(g, LayerNode("r", "Reshape", {"target_shape": [4, 2]}, ["x"]))
        True
    """
    if len(layer.inputs) != 1 or layer.weights:
        return False
    config = layer.config
    if layer.class_name == "Dropout":
        return True
    if layer.class_name == "Activation":
        return config.get("activation") == "linear"
    if layer.class_name == "Rescaling":
        return float(config.get("scale", 1.0)) == 1.0 and float(config.get("offset", 0.0)) == 0.0
    shape = tensor_shape(graph, layer.inputs[0])
    if shape is None:
        return False
    if layer.class_name == "Reshape":
        return [int(d) for d in config.get("target_shape", [])] == list(shape)
    if layer.class_name == "Flatten":
        return len(shape) == 1
    if layer.class_name == "Permute":
        return list(config.get("dims", [])) == list(range(1, len(shape) + 1))
    return False


def apply(graph: LayerGraph) -> list[dict]:
    applied = []
    for layer in list(graph.layers):
        if is_identity(graph, layer) and bypass(graph, layer, layer.inputs[0]):
            applied.append(record(KEY, layer.name, layer.inputs[0], kind=layer.class_name))
    return applied


def _cases():
    import flax.linen as nn
    from flax import nnx

    class DropoutMLP(nn.Module):  # Dense -> Dropout -> relu -> Dropout -> Dense
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Dropout(0.2, deterministic=not train)(nn.Dense(8)(x))
            x = nn.Dropout(0.5, deterministic=not train)(nn.relu(x))
            return nn.Dense(3)(x)

    class NnxDropoutOut(nnx.Module):  # the dropout is the model's output
        def __init__(self, rngs: nnx.Rngs):
            self.linear = nnx.Linear(5, 4, rngs=rngs)
            self.dropout = nnx.Dropout(0.3, rngs=rngs)

        def __call__(self, x):
            return self.dropout(self.linear(x))

    return (Case("linen-dropout-mlp", DropoutMLP, (6,)),
            Case("nnx-dropout-output", lambda: NnxDropoutOut(nnx.Rngs(0)), (5,)))


REWRITE = Rewrite(KEY, "drop Dropout and layers that return their input (linear Activation, Rescaling(1, 0), "
                       "identity Reshape/Flatten/Permute)", apply, _cases)
