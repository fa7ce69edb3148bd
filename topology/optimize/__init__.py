"""Exact graph rewrites applied at conversion time (``--optimize``, on by default).

One module per rewrite, each exporting ``REWRITE`` (a :class:`Rewrite`),
found by listing this package (modules without ``REWRITE`` are helpers). The
order of :data:`ORDER` is the order of each pass; passes repeat until nothing
changes, so e.g. Conv -> Dropout -> BatchNorm -> relu becomes one Conv with a
folded kernel and a relu activation. Adding a rewrite = adding its module and
its key to ``ORDER``.
"""
from __future__ import annotations

from topology.graph import LayerGraph
from topology.optimize.base import Rewrite
from topology.registry import Registry, plugin_modules

# The pass order is semantic (one rewrite makes room for the next, and it orders graph.rewrites),
# so it stays an explicit list; discovery only checks that it names every rewrite module.
ORDER = ("drop_identity", "merge_rescaling", "fold_batchnorm", "fold_rescaling", "fuse_activation",
         "tanh_to_sigmoid")

REGISTRY: Registry[Rewrite] = Registry("graph rewrite")


def _register_in_order() -> None:
    found: Registry[Rewrite] = Registry("graph rewrite")
    for module in plugin_modules(__name__, "REWRITE"):
        found.add(module.REWRITE.key, module.REWRITE, module.__name__)
    if set(found) != set(ORDER):
        raise ValueError(f"topology.optimize.ORDER {sorted(ORDER)} does not list the rewrite modules {sorted(found)}")
    for key in ORDER:
        REGISTRY.add(key, found[key], found.owners[key])


_register_in_order()

MAX_PASSES = 100  # every change removes a layer, so a fixed point comes long before


def optimize_graph(graph: LayerGraph, only: tuple[str, ...] | None = None) -> LayerGraph:
    """Apply every rewrite (or those in ``only``) until none applies; records go to ``graph.rewrites``.

    Edits ``graph`` in place and returns it.

    Example:
        >>> from topology.graph import InputSpec, LayerNode
        >>> g = LayerGraph([InputSpec("x", (3,))], [LayerNode("drop", "Dropout", {"rate": 0.5}, ["x"]),
        ...                LayerNode("d", "Dense", {"units": 2, "activation": "linear"}, ["drop"])], ["d"])
        >>> [layer.name for layer in optimize_graph(g).layers], g.rewrites[0]["rewrite"]
        (['d'], 'drop_identity')
    """
    rewrites = [r for key, r in REGISTRY.items() if only is None or key in only]
    for _ in range(MAX_PASSES):
        changed = False
        for rewrite in rewrites:
            applied = rewrite.apply(graph)
            graph.rewrites.extend(applied)
            changed = changed or bool(applied)
        if not changed:
            break
    return graph
