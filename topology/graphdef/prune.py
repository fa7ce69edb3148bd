"""Drop the nodes no output depends on (unused parameters are then not written either)."""
from __future__ import annotations

from topology.graphdef.nodes import GraphDef


def node_name(ref: str) -> str:
    """The node of a node output: ``"TopKV2_3:1"`` -> ``"TopKV2_3"``.

    Example:
        >>> node_name("TopKV2_3:1"), node_name("x")
        ('TopKV2_3', 'x')
    """
    return ref.lstrip("^").split(":")[0]


def prune(graph: GraphDef) -> None:
    """Keep the nodes the outputs need, and the inputs (a signature input must exist), in order.

    Example:
        >>> g = GraphDef(nodes=[{"name": "a", "op": "Const", "input": []}, {"name": "o", "op": "Identity", "input": []}],
        ...              outputs=[("o", (), "float32")])
        >>> prune(g); [n["name"] for n in g.nodes]
        ['o']
    """
    by_name = {node["name"]: node for node in graph.nodes}
    needed = {name for name, _, _ in graph.outputs} | {name for name, _, _ in graph.inputs}
    stack = list(needed)
    while stack:
        node = by_name.get(stack.pop())
        for ref in node["input"] if node else []:
            name = node_name(ref)
            if name not in needed:
                needed.add(name)
                stack.append(name)
    graph.nodes = [node for node in graph.nodes if node["name"] in needed]
    graph.consts = {name: const for name, const in graph.consts.items() if name in needed}
