"""Reading an emitted graph for the rewrites: nodes by name, who reads what, constants' values.

The rewrites (rewrites.py, rewrites_norm.py) look at a graph through a :class:`GraphIndex` and change it
in place; these helpers are what they share.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from topology.graph import Derived, WeightBinding
from topology.graphdef.nodes import GraphDef
from topology.graphdef.prune import node_name


class GraphIndex:
    """Nodes by name and who reads each node output (rebuild it after a rewrite rewires the graph).

    Example:
        >>> g = GraphDef(nodes=[{"name": "x", "op": "Placeholder", "input": []},
        ...                     {"name": "y", "op": "Relu", "input": ["x"]}], outputs=[("y", (), "float32")])
        >>> GraphIndex(g).only_reader("x")["name"]
        'y'
    """

    def __init__(self, graph: GraphDef) -> None:
        self.graph = graph
        self.by_name = {n["name"]: n for n in graph.nodes}
        self.readers: dict[str, list[dict]] = {}
        for node in graph.nodes:
            for ref in node["input"]:
                self.readers.setdefault(node_name(ref), []).append(node)
        self.outputs = {name for name, _, _ in graph.outputs}

    def only_reader(self, name: str) -> dict | None:
        readers = self.readers.get(name, [])
        if len(readers) != 1 or name in self.outputs:
            return None
        return readers[0]

    def const(self, ref: str) -> Any:
        node = self.by_name.get(node_name(ref))
        if node is None or node["op"] != "Const" or ":" in ref:
            return None
        return self.graph.consts.get(node["name"])

    def replace_reads(self, old: str, new: str) -> None:
        for node in self.graph.nodes:
            node["input"] = [new if ref == old else ref for ref in node["input"]]


def producer(index: GraphIndex, ref: str, op: str | tuple) -> dict | None:
    """The node writing ``ref`` when it is one of the ops ``op`` (and its only output), else None.

    Example:
        >>> g = GraphDef(nodes=[{"name": "x", "op": "Placeholder", "input": []}])
        >>> producer(GraphIndex(g), "x", "Placeholder")["name"], producer(GraphIndex(g), "x", "Relu")
        ('x', None)
    """
    node = index.by_name.get(node_name(ref))
    ops = (op,) if isinstance(op, str) else op
    return node if node is not None and ":" not in ref and node["op"] in ops else None


def rename_outputs(graph: GraphDef, old: str, new: str) -> None:
    """Point the graph's outputs that read node ``old`` at ``new`` (``old`` is being removed)."""
    graph.outputs = [(new if name == old else name, shape, dtype) for name, shape, dtype in graph.outputs]


def is_zero(const: Any) -> bool:
    """Whether ``const`` is one value, 0 (``max(x, 0)`` is a ReLU)."""
    return const is not None and const.array is not None and const.array.size == 1 and float(const.array.reshape(-1)[0]) == 0.0


def scalar_value(const: Any) -> float | None:
    """The value of a one-element float32 constant, else None."""
    if const is None or const.array is None or const.array.size != 1 or const.dtype != "float32":
        return None
    return float(const.array.reshape(-1)[0])


def prune_unread(graph: GraphDef) -> None:
    """Drop constants nothing reads any more (a kernel replaced by its folded copy)."""
    read = {node_name(ref) for node in graph.nodes for ref in node["input"]}
    keep = read | {name for name, _, _ in graph.outputs} | {name for name, _, _ in graph.inputs}
    graph.nodes = [n for n in graph.nodes if n["op"] != "Const" or n["name"] in keep]
    graph.consts = {name: c for name, c in graph.consts.items() if name in keep}


def scaled_const(index: GraphIndex, graph: GraphDef, ref: str, factor: float, suffix: str, rewrite: str) -> str:
    """A new constant beside the one at ``ref``: its values times ``factor`` in float32, computed when the
    weights are written (a ``Derived`` of the same weight, named after ``rewrite``); returns its name.

    Example:
        >>> scaled_const(GraphIndex(graph), graph, "dense/kernel", 0.5, "half", "fold_scale")  # doctest: +SKIP
        'dense/kernel/half'
    """
    const = index.const(ref)
    name = f"{const.name}/{suffix}"
    derived = Derived(rewrite, (const.binding,),
                      lambda w: (np.asarray(w, "float32") * np.float32(factor)).astype("float32"))
    graph.consts[name] = dataclasses.replace(const, name=name,
                                             binding=WeightBinding(const.binding.name, const.shape, derived=derived))
    const_node = index.by_name[const.name]
    graph.nodes.insert(graph.nodes.index(const_node) + 1, {**const_node, "name": name, "attr": dict(const_node["attr"])})
    return name
