"""A TF GraphDef (what ``tf.loadGraphModel`` runs) straight from a module's jaxpr.

The layers emitter (:mod:`topology.trace`) can only write what Keras layers express; this one
maps JAX primitives to TF ops one by one (:mod:`topology.graphdef.ops`), so gathers over data,
sorts, dynamic slices and integer arithmetic convert too, and attention stays one batched
matmul. The module is traced with a symbolic batch size ``b`` so every batch-dependent shape is
known to be one, and the graph takes any batch.
"""
from __future__ import annotations

from typing import Any, Callable

from topology.graph import InputSpec
from topology.graphdef.nodes import GraphDef
from topology.trace import is_nnx_module
from topology.vocabulary.tensors import TensorRef, TreePath


def symbolic_batch() -> Any:
    """JAX's symbolic dimension ``b`` that stands for the batch size while tracing.

    Example:
        >>> str(symbolic_batch())
        'b'
    """
    from jax import export

    (batch,) = export.symbolic_shape("b")
    return batch


def trace_graphdef(module: Any, inputs: list[InputSpec],
                   variables: dict[str, dict[TreePath, TensorRef]] | None = None, optimize: bool = True) -> GraphDef:
    """The GraphDef of ``module`` (Linen with ``variables``, or a live NNX module); parameters stay
    checkpoint references until the writer streams them.

    Example:
        >>> graph = trace_graphdef(nnx.Linear(4, 2, rngs=nnx.Rngs(0)), [InputSpec("input", (4,))])  # doctest: +SKIP
        >>> [n["op"] for n in graph.nodes]                                                          # doctest: +SKIP
        ['Const', 'Const', 'Placeholder', '_FusedMatMul', 'Identity']
    """
    # Local: tracing loads jax, flax and every layer kind; the CLI imports this package at start-up.
    from topology.graphdef.emit import emit_graphdef  # noqa: PLC0415
    from topology.trace.capture import trace_linen, trace_nnx  # noqa: PLC0415

    batch = symbolic_batch()
    if is_nnx_module(module):
        trace = trace_nnx(module, inputs, variables, batch=batch)
    else:
        trace = trace_linen(module, variables or {}, inputs, batch=batch)
    return emit_graphdef(trace.jaxpr, trace.param_refs, inputs, batch=batch, optimize=optimize)


def function_graphdef(fn: Callable[..., Any], inputs: list[InputSpec], optimize: bool = True) -> GraphDef:
    """The GraphDef of a plain JAX function of batched inputs (its closed-over arrays become constants).

    Example:
        >>> graph = function_graphdef(lambda x: x * 2, [InputSpec("x", (3,))])
        >>> [n["op"] for n in graph.nodes]
        ['Placeholder', 'Const', 'Mul', 'Identity']
    """
    import jax
    import numpy as np

    from topology.graphdef.emit import emit_graphdef  # noqa: PLC0415 - as above

    batch = symbolic_batch()
    specs = [jax.ShapeDtypeStruct((batch, *spec.shape), np.dtype(spec.dtype)) for spec in inputs]
    return emit_graphdef(jax.make_jaxpr(fn)(*specs), [], inputs, batch=batch, optimize=optimize)
