"""Tracing Flax modules (Linen and NNX) into a layer graph, with JAX: the engine.

``capture`` runs the module under ``jax.make_jaxpr`` with every call of a known
layer module wrapped in enter/exit marker primitives; ``build`` walks the
resulting jaxpr, turning marked calls into layers and the operations between
them (activations, pooling, reshapes, merges) into more layers. The engine imports every layer
kind and op family; they import only the plugin kit (``topology/trace_kit/``), never this package.
"""
from __future__ import annotations

from typing import Any

from topology.graph import InputSpec, LayerGraph
from topology.trace.build import build_graph
from topology.trace.capture import CallSpec, trace_linen, trace_nnx
from topology.vocabulary.tensors import TensorRef, TreePath


def is_nnx_module(obj: Any) -> bool:
    """True for a live ``flax.nnx.Module`` instance (checked without importing flax)."""
    return any(c.__module__.startswith("flax.nnx") and c.__name__ == "Module" for c in type(obj).__mro__)


def trace_graph(module: Any, inputs: list[InputSpec],
                variables: dict[str, dict[TreePath, TensorRef]] | None = None, call: Any = None) -> LayerGraph:
    """The exact layer graph of ``module`` (Linen with ``variables``, or a live NNX module), called as
    ``call`` (a :class:`topology.trace.call_spec.CallSpec`; None: ``__call__`` on the inputs) says.

    Example:
        >>> graph = trace_graph(nnx.Linear(4, 2, rngs=nnx.Rngs(0)), [InputSpec("input", (4,))])  # doctest: +SKIP
        >>> [layer.class_name for layer in graph.layers]                                          # doctest: +SKIP
        ['Dense']
    """
    call = call or CallSpec()
    if is_nnx_module(module):
        return build_graph(trace_nnx(module, inputs, variables, call=call))
    return build_graph(trace_linen(module, variables or {}, inputs, call=call))
