"""Exact graph rewrites applied at conversion time (``--optimize``, on by default).

One module per rewrite, each exporting ``REWRITE`` (a :class:`Rewrite`);
adding one = adding its module here and its name to ``_MODULES``. The order of
``_MODULES`` is the order of each pass; passes repeat until nothing changes,
so e.g. Conv -> Dropout -> BatchNorm -> relu becomes one Conv with a folded
kernel and a relu activation.
"""
from __future__ import annotations

import importlib

from topology.graph import LayerGraph
from topology.optimize.base import Rewrite

_MODULES = ("drop_identity", "merge_rescaling", "fold_batchnorm", "fold_rescaling", "fuse_activation",
            "tanh_to_sigmoid")

REGISTRY: dict[str, Rewrite] = {}
for _module in _MODULES:
    _rewrite = importlib.import_module(f"topology.optimize.{_module}").REWRITE
    REGISTRY[_rewrite.key] = _rewrite

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
