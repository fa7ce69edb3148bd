"""What a graph rewrite declares, and the graph edits rewrites share.

A rewrite is exact: the rewritten graph computes the same function as the
literal one (up to float32 rounding of a different but equivalent formula).
Each module in ``topology/optimize/`` exports one :class:`Rewrite`; its
``apply`` makes one pass over a :class:`LayerGraph`, edits it in place and
returns a record per change, e.g. ``{"rewrite": "fold_batchnorm",
"removed": "BatchNorm_0", "into": "Conv_0"}``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from topology.graph import LayerGraph, LayerNode, Shape, split_ref


@dataclass(frozen=True)
class Rewrite:
    """One exact graph rewrite.

    Example:
        >>> Rewrite("noop", "does nothing", lambda graph: []).apply(LayerGraph([], [], []))
        []
    """

    key: str
    summary: str
    apply: Callable[[LayerGraph], list[dict]]
    # () -> test cases (topology.layers.base.Case): Flax models in which the rewrite applies.
    cases: Callable[[], tuple[Any, ...]] = field(default=lambda: (), compare=False)


def record(key: str, removed: str, into: str | None, **detail: Any) -> dict:
    """The record of one applied rewrite.

    Example:
        >>> record("drop_identity", "dropout", "Dense_0", kind="Dropout")
        {'rewrite': 'drop_identity', 'removed': 'dropout', 'into': 'Dense_0', 'kind': 'Dropout'}
    """
    return {"rewrite": key, "removed": removed, "into": into, **detail}


def consumers(graph: LayerGraph, name: str) -> list[LayerNode]:
    """The layers that read ``name``'s output, or any of its outputs (once per layer)."""
    return [layer for layer in graph.layers if any(split_ref(i)[0] == name for i in layer.inputs)]


def find(graph: LayerGraph, name: str) -> LayerNode | None:
    """The layer called ``name`` (None for a model input)."""
    return next((layer for layer in graph.layers if layer.name == name), None)


def sole_reader(graph: LayerGraph, producer: str, reader: LayerNode) -> bool:
    """True when ``reader`` is the only use of ``producer``'s output (no other layer, not a model output)."""
    return all(split_ref(o)[0] != producer for o in graph.outputs) and [layer.name for layer in consumers(graph, producer)] == [reader.name] \
        and reader.inputs.count(producer) == 1


def tensor_shape(graph: LayerGraph, name: str) -> Shape | None:
    """The shape (without batch) of the tensor ``name``: a model input or a layer output."""
    for spec in graph.inputs:
        if spec.name == name:
            return tuple(spec.shape)
    layer = find(graph, name)
    return None if layer is None or layer.output_shape is None else tuple(layer.output_shape)


def bypass(graph: LayerGraph, layer: LayerNode, replacement: str) -> bool:
    """Remove ``layer``, making every reader of it read ``replacement`` instead.

    Refused (False, graph untouched) when a reader would then list one tensor
    twice (tfjs 4.22 disposes such a tensor too early) or the outputs would
    name one tensor twice.

    Example:
        >>> from topology.graph import InputSpec
        >>> g = LayerGraph([InputSpec("x", (2,))], [LayerNode("d", "Dropout", {}, ["x"]),
        ...                LayerNode("e", "Dense", {}, ["d"])], ["e"])
        >>> bypass(g, g.layers[0], "x"), g.layers[0].inputs
        (True, ['x'])
    """
    readers = consumers(graph, layer.name)
    rewired = {reader.name: [replacement if i == layer.name else i for i in reader.inputs] for reader in readers}
    outputs = [replacement if o == layer.name else o for o in graph.outputs]
    if any(len(set(inputs)) != len(inputs) for inputs in rewired.values()) or len(set(outputs)) != len(outputs):
        return False
    for reader in readers:
        reader.inputs = rewired[reader.name]
    graph.outputs = outputs
    graph.layers = [other for other in graph.layers if other is not layer]
    return True
