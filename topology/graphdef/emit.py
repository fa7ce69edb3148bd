"""Walk a jaxpr and emit TF GraphDef nodes that tfjs-converter 4.22 executes.

Call-like primitives (pjit, closed_call, custom_jvp/vjp, remat) are inlined; ``scan`` with a
static length is unrolled; every other primitive goes to its handler in
:mod:`topology.graphdef.ops`. An equation whose inputs are all known at conversion time (iota,
masks, position buckets) is evaluated by JAX itself and written as a constant (exact, and
nothing runs for it in the browser). Parameters become ``Const`` nodes whose values stream
from the checkpoint into the weight shards; inputs become ``Placeholder``s with a dynamic batch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from topology.graph import InputSpec
from topology.graphdef.nodes import MAX_FOLD_ELEMENTS, GraphBuilder, GraphDef, Value, is_static, tf_dtype
from topology.graphdef.ops import handler_for
from topology.graphdef.prune import prune
from topology.graphdef.rewrites import rewrite_graph
from topology.trace.build import source_of
from topology.vocabulary.errors import ConversionError
from topology.vocabulary.tensors import TensorRef

# Primitives that only carry a sub-jaxpr: emitted by walking it in place.
INLINED = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
           "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
           "remat": "jaxpr", "checkpoint": "jaxpr", "remat2": "jaxpr", "custom_lin": None}
# The layers tracer's markers (topology/trace_kit/markers.py) are identities here: a graph
# needs no layer boundaries, and a computed parameter (a tied head's embedding.T) is just its expression.
IDENTITY = {"flax2tfjs_enter", "flax2tfjs_exit", "flax2tfjs_variable", "flax2tfjs_side", "stop_gradient", "copy",
            "copy_p", "reduce_precision", "optimization_barrier", "name"}
NOT_FOLDED = {"rng_bit_generator", "random_bits", "random_seed", "random_wrap", "random_unwrap"}
# Computed from parameters when the weights are written, not in the browser (a BatchNorm's
# scale * rsqrt(var + eps), a reshaped bias): element-wise math and layout-free reshapes only, so a
# parameter is never written twice in another layout.
DEFERRED = {"add", "sub", "mul", "div", "neg", "exp", "log", "sqrt", "rsqrt", "max", "min", "pow", "integer_pow",
            "square", "tanh", "logistic", "abs", "reshape", "broadcast_in_dim", "squeeze",
            "convert_element_type"}


def emit_graphdef(closed_jaxpr: Any, param_refs: list, inputs: list[InputSpec], batch: Any = None,
                  optimize: bool = True) -> GraphDef:
    """The GraphDef of ``closed_jaxpr``: its first ``len(param_refs)`` inputs are the parameters
    (TensorRef, or None for a leaf that is not a tensor), the rest the model ``inputs``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = jax.make_jaxpr(lambda w, x: jnp.tanh(x @ w))(np.ones((3, 2), "float32"), np.ones((4, 3), "float32"))
        >>> ref = TensorRef(("params", "w"), (3, 2), np.dtype("float32"), lambda: np.ones((3, 2), "float32"))
        >>> [n["op"] for n in emit_graphdef(f, [ref], [InputSpec("x", (3,))]).nodes]
        ['Placeholder', 'Const', 'MatMul', 'Tanh', 'Identity']
    """
    builder = GraphBuilder()
    builder.batch = batch
    jaxpr = closed_jaxpr.jaxpr
    env: dict = {}
    for var, const in zip(jaxpr.constvars, closed_jaxpr.consts):
        env[var] = _known(const)
    param_vars, input_vars = jaxpr.invars[:len(param_refs)], jaxpr.invars[len(param_refs):]
    if len(input_vars) != len(inputs):
        raise ConversionError("GRAPH_TRACE_FAILED", f"the traced function takes {len(input_vars)} inputs, "
                              f"{len(inputs)} were described", "give one --input-shape per model input")
    names = _parameter_names(param_refs)
    for var, ref, name in zip(param_vars, param_refs, names):
        env[var] = None if ref is None else builder.parameter(ref, name)  # None: an rng key, never a tensor
    for var, spec in zip(input_vars, inputs):
        env[var] = builder.placeholder(spec.name, tuple(var.aval.shape), spec.dtype)
    walk(builder, jaxpr, env)
    for i, var in enumerate(jaxpr.outvars):
        value = builder.full(read(env, var), tuple(var.aval.shape))
        out = builder.op("Identity", [value], {"T": {"type": "DT_FLOAT"}}, value.shape, value.dtype)
        out_name = f"output_{i}"
        builder.graph.nodes[-1]["name"] = out_name
        builder.graph.nodes[-1]["attr"]["T"] = {"type": {"float32": "DT_FLOAT", "int32": "DT_INT32", "bool": "DT_BOOL"}[out.dtype.name]}
        builder.graph.outputs.append((out_name, value.shape, out.dtype.name))
    if optimize:
        rewrite_graph(builder.graph)
    prune(builder.graph)
    return builder.graph


def _parameter_names(refs: list) -> list[str]:
    names, seen = [], set()
    for ref in refs:
        base = "/".join(str(p) for p in ref.path).replace(":", "_") if isinstance(ref, TensorRef) else "unused"
        name, k = base, 1
        while name in seen:
            k += 1
            name = f"{base}_{k}"
        seen.add(name)
        names.append(name)
    return names


def _known(array: Any) -> Value:
    array = np.asarray(array)
    return Value(None, tuple(array.shape), np.dtype(tf_dtype(array.dtype)), array.astype(tf_dtype(array.dtype)))


def read(env: dict, var: Any) -> Value:
    """The value of jaxpr atom ``var``: a literal is a known value."""
    if hasattr(var, "val"):
        return _known(var.val)
    return env[var]


def walk(builder: GraphBuilder, jaxpr: Any, env: dict) -> None:
    """Emit every live equation of ``jaxpr``; ``env`` maps its variables to :class:`Value` s."""
    for eqn in _live(jaxpr):
        name = eqn.primitive.name
        values = [read(env, v) for v in eqn.invars]
        if name in IDENTITY:
            outs = values[: len(eqn.outvars)]
        elif name in INLINED or "jaxpr" in eqn.params and name not in ("scan", "while", "cond"):
            outs = _inline(builder, eqn, values)
        elif name == "scan":
            outs = _unroll_scan(builder, eqn, values)
        elif _foldable(eqn, values) and (folded := _fold(eqn, values)) is not None:
            outs = folded
        elif _deferrable(eqn, values):
            outs = [_defer(eqn, values)]
        else:
            handler = handler_for(eqn)
            if handler is None:
                where = source_of(eqn)
                raise ConversionError(
                    "GRAPH_UNSUPPORTED_PRIMITIVE",
                    f"JAX primitive '{name}' has no TF.js graph form" + (f" (at {where})" if where else ""),
                    "see docs/graph-model.md for the primitives that convert; rewrite this step with supported "
                    "operations, or open an issue with the model",
                )
            if not getattr(handler, "broadcasts", False):  # only element-wise handlers take un-broadcast inputs
                values = [builder.full(v, tuple(var.aval.shape)) if v is not None and hasattr(var, "aval") else v
                          for v, var in zip(values, eqn.invars)]
            outs = handler(builder, eqn, values)
            if isinstance(outs, Value):
                outs = [outs]
        for var, value in zip(eqn.outvars, outs):
            env[var] = value


def _sub_jaxpr(eqn: Any) -> Any:
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in eqn.params:
            return eqn.params[key]
    raise ConversionError("GRAPH_UNSUPPORTED_PRIMITIVE", f"JAX primitive '{eqn.primitive.name}' carries no jaxpr",
                          "see docs/graph-model.md")


def _inline(builder: GraphBuilder, eqn: Any, values: list[Value]) -> list[Value]:
    sub = _sub_jaxpr(eqn)
    closed = sub if hasattr(sub, "jaxpr") else None
    inner = closed.jaxpr if closed is not None else sub
    env: dict = {}
    if closed is not None:
        for var, const in zip(inner.constvars, closed.consts):
            env[var] = _known(const)
    for var, value in zip(inner.invars, values[len(values) - len(inner.invars):]):
        env[var] = value
    walk(builder, inner, env)
    return [read(env, v) for v in inner.outvars]


def _unroll_scan(builder: GraphBuilder, eqn: Any, values: list[Value]) -> list[Value]:
    from topology.graphdef.ops.shape import index_axis0, stack_axis0  # a family module; ops imports this one's readers

    p = eqn.params
    closed = p["jaxpr"]
    n_consts, n_carry, length = p["num_consts"], p["num_carry"], int(p["length"])
    consts, carry, xs = values[:n_consts], values[n_consts:n_consts + n_carry], values[n_consts + n_carry:]
    ys_steps: list[list[Value]] = []
    order = range(length - 1, -1, -1) if p.get("reverse") else range(length)
    for i in order:
        env: dict = {}
        for var, const in zip(closed.jaxpr.constvars, closed.consts):
            env[var] = _known(const)
        step_inputs = [*consts, *carry, *(index_axis0(builder, x, i) for x in xs)]
        for var, value in zip(closed.jaxpr.invars, step_inputs):
            env[var] = value
        walk(builder, closed.jaxpr, env)
        outs = [read(env, v) for v in closed.jaxpr.outvars]
        carry, ys = outs[:n_carry], outs[n_carry:]
        ys_steps.append(ys)
    if p.get("reverse"):
        ys_steps.reverse()
    stacked = [stack_axis0(builder, [step[k] for step in ys_steps], tuple(eqn.outvars[n_carry + k].aval.shape))
               for k in range(len(eqn.outvars) - n_carry)]
    return [*carry, *stacked]


def _live(jaxpr: Any) -> list:
    """The equations some output depends on (or with effects), in order: dead code such as nn.RNN's
    default carry key (``random_seed``, unused by a zeros carry init) is not emitted."""
    needed = {v for v in jaxpr.outvars if not hasattr(v, "val")}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if getattr(eqn, "effects", None) or any(v in needed for v in eqn.outvars):
            kept.append(eqn)
            needed.update(v for v in eqn.invars if not hasattr(v, "val"))
    return kept[::-1]


def _foldable(eqn: Any, values: list[Value]) -> bool:
    if eqn.primitive.name in NOT_FOLDED or not all(v is not None and v.known for v in values):
        return False
    for var in eqn.outvars:
        shape = getattr(var.aval, "shape", None)
        if shape is None or not all(is_static(d) for d in shape) or int(np.prod(shape)) > MAX_FOLD_ELEMENTS:
            return False
    return True


def _deferrable(eqn: Any, values: list[Value]) -> bool:
    if eqn.primitive.name not in DEFERRED or len(eqn.outvars) != 1 or eqn.primitive.multiple_results:
        return False
    if not all(v is not None and (v.known or (v.binding is not None and v.ref is None)) for v in values):
        return False
    aval = eqn.outvars[0].aval
    if not all(is_static(d) for d in aval.shape) or np.dtype(aval.dtype).kind != "f":
        return False
    size = int(np.prod(aval.shape, dtype=np.int64))
    largest = max(int(np.prod(v.shape, dtype=np.int64)) for v in values)
    return size <= max(largest, 4096)  # never a broadcast that grows a parameter


def _defer(eqn: Any, values: list[Value]) -> Value:
    import jax

    from topology.graph import Derived, WeightBinding

    bindings = tuple(v.binding if v.binding is not None else WeightBinding("c", v.shape, constant=v.value)
                     for v in values)
    dtypes = [var.aval.dtype for var in eqn.invars]

    def compute(*arrays: np.ndarray) -> np.ndarray:
        with jax.ensure_compile_time_eval():
            out = eqn.primitive.bind(*[jax.numpy.asarray(a, d) for a, d in zip(arrays, dtypes)], **eqn.params)
        return np.asarray(out, "float32")

    shape = tuple(int(d) for d in eqn.outvars[0].aval.shape)
    binding = WeightBinding(eqn.primitive.name, shape, derived=Derived(f"jax.{eqn.primitive.name}", bindings, compute))
    return Value(None, shape, np.dtype("float32"), binding=binding)


def _fold(eqn: Any, values: list[Value]) -> list[Value] | None:
    import jax

    try:
        with jax.ensure_compile_time_eval():
            out = eqn.primitive.bind(*[jax.numpy.asarray(v.value, var.aval.dtype)
                                       for v, var in zip(values, eqn.invars)], **eqn.params)
    except Exception:  # noqa: BLE001 - a value JAX will not evaluate here is emitted as nodes instead
        return None
    outs = out if eqn.primitive.multiple_results else [out]
    return [_known(np.asarray(o)) for o in outs]
