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
from topology.vocabulary.errors import ConversionError, Notices
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
                   variables: dict[str, dict[TreePath, TensorRef]] | None = None, optimize: bool = True,
                   notices: Notices | None = None, call: Any = None) -> GraphDef:
    """The GraphDef of ``module`` (Linen with ``variables``, or a live NNX module); parameters stay
    checkpoint references until the writer streams them.

    Code that needs a concrete batch size (``if x.shape[0] > 1``) cannot be traced with the symbolic
    one: the graph is then traced for batch 1, with a ``GRAPH_FIXED_BATCH`` warning in ``notices``.

    Example:
        >>> graph = trace_graphdef(nnx.Linear(4, 2, rngs=nnx.Rngs(0)), [InputSpec("input", (4,))])  # doctest: +SKIP
        >>> [n["op"] for n in graph.nodes]                                                          # doctest: +SKIP
        ['Const', 'Const', 'Placeholder', '_FusedMatMul', 'Identity']
    """
    # Local: tracing loads jax, flax and every layer kind; the CLI imports this package at start-up.
    from topology.graphdef.emit import emit_graphdef  # noqa: PLC0415
    from topology.trace.capture import trace_linen, trace_nnx  # noqa: PLC0415

    def trace(batch: Any) -> Any:
        how = {"call": call} if call is not None else {}  # a CallSpec: how --call/--method invoke the model
        if is_nnx_module(module):
            return trace_nnx(module, inputs, variables, batch=batch, **how)
        return trace_linen(module, variables or {}, inputs, batch=batch, **how)

    batch = symbolic_batch()
    try:
        traced = trace(batch)
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - JAX's refusal of a symbolic size (InconclusiveDimensionOperation, ...)
        if notices is None:
            raise
        batch, traced = 1, trace(1)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        notices.warn("GRAPH_FIXED_BATCH", f"the model code needs a concrete batch size ({first_line[:160]}); "
                                          "the GraphModel takes batch 1 only")
    return emit_graphdef(traced.jaxpr, traced.param_refs, inputs, batch=batch, optimize=optimize)


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
