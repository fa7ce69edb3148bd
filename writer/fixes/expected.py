"""The variables a module expects: paths, shapes and collections, in model order.

For a Linen module they come from ``jax.eval_shape(module.init, ...)`` (no
arrays are created); for a live NNX module, from its own state. The order is
the order the model creates its variables in (call order for compact modules),
which is what renamed layers are matched by. Flattening an ``eval_shape``
result would sort the keys, so the order is recorded while ``init`` runs.
"""
from __future__ import annotations

from typing import Any

from topology.graph import InputSpec
from topology.trace.call_spec import CallSpec
from topology.trace.signature import signature_error
from topology.vocabulary.errors import ConversionError
from topology.vocabulary.misfit import Misfit
from writer.fixes.leaf import ExpectedLeaf
from topology.vocabulary.tensors import TreePath

MODEL_COLLECTIONS = ("params", "batch_stats")


def linen_expected(module: Any, inputs: list[InputSpec], call: CallSpec = CallSpec()) -> list[ExpectedLeaf]:
    """What ``module.init`` creates for ``inputs`` (batch 1), in creation order.

    Raises INPUT_SHAPE_INVALID when the module cannot be called on inputs of
    that shape (the JAX error is quoted).

    Example:
        >>> import flax.linen as nn
        >>> [l.where for l in linen_expected(nn.Dense(3), [InputSpec("input", (4,))])]
        ['params/kernel', 'params/bias']
    """
    import jax
    import jax.numpy as jnp
    from flax.core.meta import unbox

    order: list[tuple[str, TreePath]] = []

    def init():
        xs = [jnp.zeros((1, *spec.shape), spec.dtype) for spec in inputs]
        rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
        # nn.with_logical_partitioning / nn.Partitioned box their values; checkpoints and
        # apply() take the plain arrays, so expect those.
        boxed = call.linen_init(module, rngs, xs)
        # Walk before unboxing: unbox's tree_map sorts keys, the boxed dicts keep creation order.
        order.extend(_walk(boxed))
        return unbox(boxed)

    try:
        jaxpr, shapes = jax.make_jaxpr(init, return_shape=True)()
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001  JAX and Flax raise many types for bad shapes
        raise _cannot_take(module, inputs, exc, call) from exc
    _refuse_empty_values(module, inputs, jaxpr.jaxpr)
    leaves = []
    for collection, path in order:
        if collection not in MODEL_COLLECTIONS:
            continue  # e.g. 'intermediates', 'cache': not model weights
        node = shapes[collection]
        for key in path:
            node = node[key]
        leaves.append(ExpectedLeaf(collection, path, tuple(int(d) for d in node.shape)))
    return leaves


def linen_applies(module: Any, variables: dict[str, dict[TreePath, Any]], inputs: list[InputSpec],
                  call: CallSpec = CallSpec()) -> bool:
    """Whether ``module.apply`` runs (abstractly) with these variables' shapes on ``inputs``.

    For modules whose ``init`` cannot run here (e.g. it needs an rng stream
    only training provides) while inference works.

    Example:
        >>> import flax.linen as nn, numpy as np
        >>> from topology.vocabulary.tensors import TensorRef
        >>> f = lambda s: TensorRef(("k",), s, np.dtype("float32"), None)
        >>> linen_applies(nn.Dense(3), {"params": {("kernel",): f((4, 3)), ("bias",): f((3,))}},
        ...               [InputSpec("input", (4,))])
        True
    """
    import jax

    abstract: dict = {}
    for collection, tree in variables.items():
        for path, ref in tree.items():
            node = abstract.setdefault(collection, {})
            for key in path[:-1]:
                node = node.setdefault(key, {})
            dtype = "float32" if ref.dtype.kind not in "iu" else ref.dtype
            node[path[-1]] = jax.ShapeDtypeStruct(tuple(ref.shape), dtype)
    xs = [jax.ShapeDtypeStruct((1, *spec.shape), spec.dtype) for spec in inputs]
    try:
        jaxpr = jax.make_jaxpr(lambda v, *x: call.linen_apply(module, v, list(x)))(abstract, *xs)
        _refuse_empty_values(module, inputs, jaxpr.jaxpr)
    except Exception:  # noqa: BLE001  any failure means: no
        return False
    return True


def nnx_expected(model: Any) -> list[ExpectedLeaf]:
    """The parameters and batch statistics of a live NNX module, in graph order.

    Example:
        >>> from flax import nnx
        >>> [l.where for l in nnx_expected(nnx.Linear(4, 2, rngs=nnx.Rngs(0)))]
        ['params/bias', 'params/kernel']
    """
    from flax import nnx

    leaves = []
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Variable) or isinstance(node, nnx.RngState):
            continue
        value = node.get_value() if hasattr(node, "get_value") else node.value
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            continue
        collection = "batch_stats" if isinstance(node, nnx.BatchStat) else "params"
        leaves.append(ExpectedLeaf(collection, tuple(str(p) for p in path), tuple(int(d) for d in value.shape)))
    return leaves


def nnx_check_inputs(model: Any, inputs: list[InputSpec], call: CallSpec = CallSpec()) -> None:
    """Raise INPUT_SHAPE_INVALID unless the NNX ``model`` can be called on ``inputs``.

    Example:
        >>> from flax import nnx
        >>> nnx_check_inputs(nnx.Linear(4, 2, rngs=nnx.Rngs(0)), [InputSpec("input", (4,))])
    """
    import jax
    from flax import nnx

    graphdef, state = nnx.split(model)
    abstract = [jax.ShapeDtypeStruct((1, *spec.shape), spec.dtype) for spec in inputs]

    def run(state_tree, *xs):
        merged = nnx.merge(graphdef, state_tree)
        merged.eval()
        return call.nnx_call(merged, list(xs))

    try:
        jaxpr = jax.make_jaxpr(run)(state, *abstract)
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _cannot_take(model, inputs, exc, call) from exc
    _refuse_empty_values(model, inputs, jaxpr.jaxpr)


def _walk(tree: Any, prefix: tuple = ()) -> list[tuple[str, TreePath]]:
    out = []
    for key, value in tree.items():
        path = (*prefix, str(key))
        if hasattr(value, "items"):
            out.extend(_walk(value, path))
        else:
            out.append((path[0], path[1:]))
    return out


def _refuse_empty_values(module: Any, inputs: list[InputSpec], jaxpr: Any) -> None:
    """An input so small that some intermediate value is empty (e.g. VALID convolutions
    shrinking it to 0x0) only computes NaN or nothing: the model cannot take it."""
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            shape = getattr(getattr(var, "aval", None), "shape", None)
            if shape is not None and 0 in shape:
                raise _cannot_take(module, inputs, ValueError(
                    f"`{eqn.primitive.name}` gives an empty value of shape {tuple(shape)} (the input is too small)"))
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                _refuse_empty_values(module, inputs, inner)


def _cannot_take(module: Any, inputs: list[InputSpec], exc: Exception, call: CallSpec = CallSpec()) -> ConversionError:
    wrong_call = signature_error(module, exc, call.method)  # a method that needs more than the inputs
    if wrong_call is not None:
        return wrong_call
    shapes = " and ".join(f"({', '.join(map(str, (1, *s.shape)))}) {s.dtype}" for s in inputs)
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = detail.split(" (https://")[0][:300]
    return Misfit(
        "INPUT_SHAPE_INVALID",
        f"{type(module).__name__} cannot be called on an input of shape {shapes}: {type(exc).__name__}: {detail}",
        "check --input-shape (without the batch axis) and --input-dtype; if they are right, "
        "the model code itself fails: call it in Python on an input of that shape",
        refused_by="model", wants_integers=raised_by_embedding(exc),
    )


def raised_by_embedding(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by an embedding layer's own call (Linen or NNX ``Embed``), the one
    thing it refuses being an input that is not integer ids. A structural fact (where the error was
    raised), not a reading of JAX's or Flax's wording.

    Example:
        >>> raised_by_embedding(ValueError("raised here, not in a layer"))
        False
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or tb.tb_frame.f_code.co_name != "__call__":
        return False
    layer = tb.tb_frame.f_locals.get("self")
    return any(cls.__name__ == "Embed" and cls.__module__.startswith(("flax.linen", "flax.nnx"))
               for cls in type(layer).__mro__)
