"""Walk a traced jaxpr and build the layer graph.

Marked layer calls become their kind's layers. Between them, element-wise
operations accumulate into :class:`Pending` functions that are identified
numerically when needed (see ``topology.ops.materialize``); structural
operations (reshape, pooling, merges, ...) are handled by the op handlers
registered in ``topology.ops``. Anything else stops with UNSUPPORTED_OPERATION
naming the primitive and the user's source line.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from topology.graph import LayerGraph, LayerNode, WeightBinding, prune_unused
from topology.layers.base import layer_base
from topology.ops import handler_for
from topology.ops.materialize import materialize
from topology.trace_kit.traced import Trace
from topology.trace.constant_tensors import ConstantTensors
from topology.trace.constants import as_const, fold_constants, param_const
from topology.trace_kit.errors import unsupported
from topology.trace_kit.markers import ENTER, EXIT, SIDE, VARIABLE
from topology.trace_kit.builder import Deferred
from topology.trace_kit.merged_batch import MergedBatch
from topology.trace_kit.values import Const, Inside, Pending, Tensor
from topology.vocabulary.errors import ConversionError
from topology.vocabulary.tensors import TensorRef

MARKERS = (ENTER, EXIT)
CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")  # where call-like primitives keep their body


class GraphBuilder:
    """Accumulates layers while the jaxpr is walked; op handlers use it through
    :class:`topology.trace_kit.builder.Builder`."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self.layers: list[LayerNode] = []
        self.names: set[str] = set()
        self.call_inputs: dict[int, list[Tensor]] = {}
        self.counters: dict[str, int] = {}
        self.constants = ConstantTensors(self)  # constants made tensors (constant_tensors.py)
        self.constant_calls: set[int] = set()  # layer calls applied to a constant (folded)
        self.multi_output_calls: dict[int, list[str]] = {}  # call -> its output refs, once emitted
        self.merged = MergedBatch()

    # -- naming and layers -------------------------------------------------
    def unique(self, base: str) -> str:
        base = base.replace("/", ".") or "layer"
        if base not in self.names:
            self.names.add(base)
            return base
        index = 2
        while f"{base}_{index}" in self.names:
            index += 1
        self.names.add(f"{base}_{index}")
        return f"{base}_{index}"

    def op_name(self, op: str) -> str:
        self.counters[op] = self.counters.get(op, 0) + 1
        return self.unique(f"{op}_{self.counters[op]}")

    def add_layer(self, op: str, class_name: str, config: dict, inputs: list[Tensor], shape: tuple[int, ...],
                  weights: list[WeightBinding] | None = None, origin: str = "", dtype=np.float32) -> Tensor:
        """Append one layer named after ``op`` and return its output tensor (``shape`` includes batch)."""
        inputs = self._distinct(inputs)
        name = self.op_name(op)
        node = LayerNode(name, class_name, layer_base(**config), [t.layer for t in inputs], list(weights or []),
                         tuple(shape[1:]), origin)
        self.layers.append(node)
        self.merged.follow(node, origin)
        return Tensor(name, tuple(shape), np.dtype(dtype))

    def _distinct(self, inputs: list[Tensor]) -> list[Tensor]:
        # tfjs 4.22 disposes a tensor too early when one node lists it twice
        # ("Tensor is disposed"): give repeats an exact identity copy.
        seen: set[str] = set()
        distinct = []
        for tensor in inputs:
            if tensor.layer in seen:
                tensor = self.add_layer("copy", "Rescaling", {"scale": 1.0, "offset": 0.0}, [tensor], tensor.shape)
            seen.add(tensor.layer)
            distinct.append(tensor)
        return distinct

    def add_nodes(self, nodes: list[LayerNode], shape: tuple[int, ...]) -> Tensor:
        for node in nodes:
            self.names.add(node.name)
            self.layers.append(node)
            self.merged.follow(node, node.origin)
        return Tensor(nodes[-1].name, tuple(shape), np.dtype("float32"))

    # -- values ------------------------------------------------------------
    def tensor(self, value: Any, where: str = "") -> Tensor:
        """The value as a layer output, identifying a pending function first."""
        if isinstance(value, Tensor):
            return value
        if isinstance(value, Deferred):  # e.g. a window sum used as it is: sum pooling
            value = value.as_pending(self)
        if isinstance(value, Pending):
            if value.materialized is None:
                value.materialized = materialize(self, value)
            return value.materialized
        raise unsupported("a constant or parameter used on its own as a layer input or model output", where,
                          "combine it with activations (+, *, concatenate), or compute it inside a layer")

    def constant_tensor(self, const: Const, carrier: Tensor, where: str) -> Tensor:
        """``const`` (traced shape (batch, *S)) as a layer output, read off one element of ``carrier``."""
        return self.constants.tensor(const, carrier, where)

    def as_tensors(self, values: list, where: str) -> list[Tensor]:
        """Every value as a tensor; constants are read off the first activation among them."""
        return self.constants.as_tensors(values, where)

    # -- walking (scan walks its body once per step) ------------------------
    def walk(self, jaxpr: Any, env: dict, outer_where: str = "") -> None:
        """Walk the equations of ``jaxpr`` with ``env`` (jaxpr variable -> value), adding layers."""
        _walk(self, jaxpr, env, outer_where)

    def read(self, env: dict, var: Any) -> Any:
        """The value of ``var`` in ``env`` (a literal becomes a constant)."""
        return _read(env, var)


def source_of(eqn: Any) -> str:
    """The user's file:line that produced ``eqn``, when JAX recorded it."""
    try:
        from jax._src import source_info_util

        for frame in source_info_util.user_frames(eqn.source_info.traceback):
            if not any(part in frame.file_name for part in _INTERNAL_PATHS):
                return f"{frame.file_name}:{frame.start_line}"
        return ""
    except Exception:  # private API: best effort only
        return ""


_INTERNAL_PATHS = ("/flax/", "/jax/", "/jaxlib/", "/topology/", "/writer/", "/optax/")


def build_graph(trace: Trace) -> LayerGraph:
    """Turn a :class:`Trace` into a :class:`LayerGraph`.

    Example:
        >>> graph = build_graph(trace_linen(module, variables, inputs))   # doctest: +SKIP
    """
    builder = GraphBuilder(trace)
    closed = trace.jaxpr
    jaxpr = closed.jaxpr
    env: dict[Any, Any] = {}
    for var, value in zip(jaxpr.constvars, closed.consts):
        env[var] = as_const(value)
    n_inputs = len(trace.inputs)
    variable_vars = jaxpr.invars[: len(jaxpr.invars) - n_inputs]
    refs = list(trace.param_refs) or [None] * len(variable_vars)
    for var, ref in zip(variable_vars, refs):
        env[var] = param_const(ref)  # a parameter used outside a layer becomes a constant
    for var, spec in zip(jaxpr.invars[len(variable_vars):], trace.inputs):
        builder.names.add(spec.name)
        env[var] = Tensor(spec.name, tuple(var.aval.shape), np.dtype(spec.dtype))
    _walk(builder, jaxpr, env)
    outputs = []
    for var in jaxpr.outvars:
        tensor = builder.tensor(_read(env, var), "model output")
        if tensor.layer in builder.merged.lead:
            raise unsupported("returning activations whose batch axis merges other axes", "model output",
                              "reshape them back to (batch, ...) before returning them")
        if tensor.layer in {spec.name for spec in trace.inputs}:
            raise unsupported("returning an input unchanged", "model output", "the model must compute something")
        outputs.append(tensor.layer)
    return prune_unused(LayerGraph(list(trace.inputs), builder.layers, outputs))  # results thrown away


def _read(env: dict, var: Any) -> Any:
    if hasattr(var, "val") and not hasattr(var, "count") and type(var).__name__ == "Literal":
        return Const(np.asarray(var.val))
    return env[var]


def _walk(builder: GraphBuilder, jaxpr: Any, env: dict, outer_where: str = "") -> None:
    for eqn in jaxpr.eqns:
        values = [_read(env, v) for v in eqn.invars]
        name = eqn.primitive.name
        # Inside a jit-ed helper (jnp.cumsum, jnp.sort, ...) the traceback has no user frame: use the call's.
        where = source_of(eqn) or outer_where
        if name in MARKERS and _constant_call(builder, eqn, values, env, where):
            continue  # a layer applied to a constant (nn.Embed of arange) is a constant
        if name == ENTER:
            call = eqn.params["call"]
            builder.call_inputs.setdefault(call, []).append(builder.tensor(values[0], where))
            env[eqn.outvars[0]] = Inside(call)
            continue
        if name == EXIT:
            env[eqn.outvars[0]] = _emit_output(builder, eqn.params["call"], eqn.params.get("output"),
                                               eqn.outvars[0].aval)
            continue
        if name == VARIABLE:  # a parameter the model computed and passed to a layer's apply
            _computed_variable(builder, eqn, values[0], where)
            env[eqn.outvars[0]] = values[0]
            continue
        if name == SIDE:  # e.g. attention's mask=: the layer kind composes it (side_inputs.py)
            builder.trace.calls[eqn.params["call"]].attrs.setdefault("_side", {})[eqn.params["name"]] = values[0]
            env[eqn.outvars[0]] = Inside(eqn.params["call"])
            continue
        insides = {v.call for v in values if isinstance(v, Inside)}
        if insides:
            if len(insides) > 1 or any(isinstance(v, (Tensor, Pending)) for v in values):
                raise unsupported("a layer that reads an array not passed as a positional argument", where,
                                  "pass every array input of a layer positionally")
            for out in eqn.outvars:
                env[out] = Inside(next(iter(insides)))
            continue
        if all(isinstance(v, Const) for v in values):
            for out, value in zip(eqn.outvars, fold_constants(eqn, values)):
                env[out] = value
            continue
        body = next((eqn.params[p] for p in CALL_PARAMS if p in eqn.params), None)
        if body is not None and handler_for(eqn) is None:
            inner = body.jaxpr if hasattr(body, "jaxpr") else body
            inner_env = {var: value for var, value in zip(inner.invars, values)}
            for var, const in zip(inner.constvars, getattr(body, "consts", [])):
                inner_env[var] = as_const(const)
            _walk(builder, inner, inner_env, where)
            for out, inner_out in zip(eqn.outvars, inner.outvars):
                env[out] = _read(inner_env, inner_out)
            continue
        handler = handler_for(eqn)
        if handler is None:
            raise unsupported(f"operation `{name}`", where, "see docs/supported-layers.md for what converts (installed with the package, in writer/resources/docs/)")
        results = handler(builder, eqn, values, where)
        results = results if isinstance(results, list) else [results]
        for out, result in zip(eqn.outvars, results):
            env[out] = result


def _computed_variable(builder: GraphBuilder, eqn: Any, value: Any, where: str) -> None:
    """Bind a computed parameter (``embedding.T`` of a tied LM head, a weight-normed kernel) to its
    layer call: it is computed from the checkpoint tensors it comes from when the weights are written."""
    params = eqn.params
    call = builder.trace.calls[params["call"]]
    key = (params["collection"], params["name"])
    aval = eqn.invars[0].aval
    if not isinstance(value, Const):
        raise unsupported(f"the {key[1]} of layer {'/'.join(call.path) or call.kind.key} computed from the inputs",
                          call.line or where, "a layer's parameters must come from the checkpoint, or be computed "
                          "from checkpoint tensors only (e.g. embedding.T for a tied head)")
    if value.lazy is not None:
        lazy = value.lazy
        origin, load = lazy.origin, lazy.compute
    elif value.known:
        origin, array = "a constant", np.asarray(value.value)
        load = lambda array=array: array  # noqa: E731
    else:
        raise ConversionError(
            "MISSING_PARAMETER", f"the {key[1]} passed to layer {'/'.join(call.path) or call.kind.key} at "
            f"{call.line or where} is computed from a variable the checkpoint does not have",
            "save the checkpoint from this model (every parameter the computation reads must be in it)")

    def computed(load=load, dtype=np.dtype(aval.dtype)) -> np.ndarray:
        return np.asarray(load(), dtype)

    call.variables[key] = TensorRef(("computed", *origin.split("/")), tuple(aval.shape), np.dtype(aval.dtype), computed,
                                    f"computed from {origin}")


def _constant_call(builder: GraphBuilder, eqn: Any, values: list, env: dict, where: str) -> bool:
    """A marker of a layer call whose inputs are constants: the call's body is folded like any constant."""
    call = eqn.params["call"]
    constant_calls = builder.constant_calls
    if eqn.primitive.name == ENTER and isinstance(values[0], Const):
        if call in builder.call_inputs:
            raise unsupported("a layer applied to both activations and a constant", where,
                              "pass the constant to the layer as its own call")
        constant_calls.add(call)
    elif call in constant_calls and not isinstance(values[0], Const):
        if eqn.primitive.name == ENTER:
            raise unsupported("a layer applied to both activations and a constant", where,
                              "pass the constant to the layer as its own call")
        return False
    if call not in constant_calls:
        return False
    env[eqn.outvars[0]] = values[0]
    return True


def _emit_output(builder: GraphBuilder, call_index: int, output: int | None, aval: Any) -> Tensor:
    """The tensor of one exit marker: the call's output, or leaf ``output`` of a call returning a tuple
    (its layers are emitted at the first leaf; the others refer to further outputs of them)."""
    if output is None:
        return _emit_call(builder, call_index, aval)
    emitted = builder.multi_output_calls
    if call_index not in emitted:
        name, attrs, _ = _emit_nodes(builder, call_index, aval)
        emitted[call_index] = builder.trace.calls[call_index].kind.output_refs(name, attrs)
    return Tensor(emitted[call_index][output], tuple(aval.shape), np.dtype(aval.dtype))


def _emit_call(builder: GraphBuilder, call_index: int, aval: Any) -> Tensor:
    _, _, nodes = _emit_nodes(builder, call_index, aval)
    return Tensor(nodes[-1].name, tuple(aval.shape), np.dtype("float32"))


def _emit_nodes(builder: GraphBuilder, call_index: int, aval: Any) -> tuple[str, dict, list[LayerNode]]:
    call = builder.trace.calls[call_index]
    inputs = builder.call_inputs.get(call_index, [])
    name = builder.unique(".".join(call.path) or call.kind.key)
    origin = "/".join(call.path) or call.kind.key
    attrs = dict(call.attrs, _input_shapes=[t.shape for t in inputs], _output_shape=tuple(aval.shape),
                 _merged_batch=any(t.layer in builder.merged.lead for t in inputs))  # see trace_kit/merged_batch.py
    try:
        nodes = call.kind.nodes(name, attrs, [t.layer for t in inputs], call.variables, origin,
                                tuple(aval.shape[1:]))
    except KeyError as exc:
        at = f" (called at {call.line})" if call.line else ""
        raise ConversionError(
            "MISSING_PARAMETER", f"layer {origin}{at} needs {exc.args[0]}, which the variables do not have",
            "check that the checkpoint was saved from this model; a parameter the model computes is read "
            "when the layer is applied with it (module.apply({'params': {...}}, x))",
        ) from None
    for node in nodes[:-1]:
        builder.names.add(node.name)
    builder.add_nodes(nodes, tuple(aval.shape))
    return name, attrs, nodes
