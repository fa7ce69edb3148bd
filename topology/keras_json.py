"""Emit a :class:`LayerGraph` as the Keras-2 ``modelTopology`` tfjs-layers 4.22 loads.

Sequential when the graph is a chain, Functional otherwise. Names are checked
first: tfjs hangs forever on an inbound reference to an unknown layer.
"""
from __future__ import annotations

from topology.graph import LayerGraph, LayerNode, split_ref

KERAS_VERSION = "2.15.0"  # the Keras-2 config dialect we write; tfjs ignores it


def model_topology(graph: LayerGraph, name: str = "model") -> dict:
    """The ``modelTopology`` object of model.json.

    Example:
        >>> from topology.graph import InputSpec
        >>> g = LayerGraph([InputSpec("input", (3,))], [LayerNode("d", "Dense", {"units": 1}, ["input"])], ["d"])
        >>> model_topology(g)["model_config"]["class_name"]
        'Sequential'
    """
    check_names(graph)
    config = _sequential(graph, name) if graph.is_chain() else _functional(graph, name)
    return {"keras_version": KERAS_VERSION, "backend": "tensorflow", "model_config": config}


def check_names(graph: LayerGraph) -> None:
    """Unique layer names, and every inbound and output name defined before use."""
    defined: set[str] = set()
    for spec in graph.inputs:
        _define(defined, spec.name)
    for layer in graph.layers:
        for inbound in layer.inputs:
            if split_ref(inbound)[0] not in defined:
                raise ValueError(f"layer {layer.name!r} reads {inbound!r}, which is not defined before it")
        _define(defined, layer.name)
    for output in graph.outputs:
        if split_ref(output)[0] not in defined:
            raise ValueError(f"output {output!r} is not a layer of the graph")


def _define(defined: set[str], name: str) -> None:
    if name in defined:
        raise ValueError(f"layer name {name!r} is used twice")
    defined.add(name)


def _input_layer(graph: LayerGraph, index: int) -> dict:
    spec = graph.inputs[index]
    return {
        "class_name": "InputLayer",
        "config": {"batch_input_shape": spec.batch_shape, "dtype": spec.dtype,
                   "sparse": False, "ragged": False, "name": spec.name},
    }


def _layer_config(layer: LayerNode) -> dict:
    return {"name": layer.name, **layer.config}


def _sequential(graph: LayerGraph, name: str) -> dict:
    layers = [_input_layer(graph, 0)]
    layers += [{"class_name": layer.class_name, "config": _layer_config(layer)} for layer in graph.layers]
    return {"class_name": "Sequential", "config": {"name": name, "layers": layers}}


def _functional(graph: LayerGraph, name: str) -> dict:
    layers = []
    for index, spec in enumerate(graph.inputs):
        entry = _input_layer(graph, index)
        layers.append({"class_name": "InputLayer", "name": spec.name, "inbound_nodes": [], "config": entry["config"]})
    for layer in graph.layers:
        layers.append({
            "class_name": layer.class_name,
            "name": layer.name,
            "inbound_nodes": [[[*_node_tensor(inbound), {}] for inbound in layer.inputs]],
            "config": _layer_config(layer),
        })
    return {
        "class_name": "Functional",
        "config": {
            "name": name,
            "layers": layers,
            "input_layers": [[spec.name, 0, 0] for spec in graph.inputs],
            "output_layers": [_node_tensor(output) for output in graph.outputs],
        },
    }


def _node_tensor(ref: str) -> list:
    """Keras' [layer, node index, tensor index] for a tensor reference ("lstm:2": the LSTM's c state)."""
    layer, index = split_ref(ref)
    return [layer, 0, index]
