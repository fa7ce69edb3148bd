"""Run a Flax module under ``jax.make_jaxpr`` in inference mode, marking layer calls.

Linen modules are intercepted with ``nn.intercept_methods``; NNX layer classes
get their ``__call__`` wrapped for the duration of the trace. Only the
outermost call of a known layer kind is marked (a layer built from other
layers is one layer). Parameters are passed as abstract shapes, so tracing
reads no weight data.
"""
from __future__ import annotations

import contextlib
import importlib
import itertools
from typing import Any, Callable, Iterator

import numpy as np

from topology.graph import InputSpec
from topology.layers import REGISTRY, kind_for_module
from topology.layers.base import LayerKind
from topology.trace.call_spec import INFERENCE_FLAGS, CallSpec, inference_kwargs  # noqa: F401  (re-exported)
from topology.trace.model_errors import flax_error_to_conversion_error, model_error
from topology.trace.nnx_lifted import place
from topology.trace.params import linen_refs, nnx_refs
from topology.trace.side_inputs import mark_keywords
from topology.trace_kit.call_context import CallContext, user_line
from topology.trace_kit.markers import enter, exit_, variable
from topology.trace_kit.traced import LayerCall, Trace
from topology.vocabulary.errors import ConversionError
from topology.vocabulary.tensors import TensorRef, TreePath

TRACE_BATCH = 2  # >1 so that an op mixing the batch axis is noticed


class _Recorder:
    def __init__(self, lookup_variables: Callable[[Any, TreePath], dict[tuple[str, str], TensorRef]],
                 computed_variables: Callable[[Any], dict[tuple[str, str], Any]] = lambda module: {}):
        self.computed_variables = computed_variables  # module -> its variables that are not checkpoint leaves
        self.calls: dict[int, LayerCall] = {}
        self.depth = 0
        self.counter = itertools.count(1)
        self.lookup_variables = lookup_variables

    def call(self, module: Any, path: TreePath, run: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        layer_kind = kind_for_module(module) if self.depth == 0 else None
        if layer_kind is None:
            self.depth += bool(self.depth)
            try:
                return run(*args, **kwargs)
            finally:
                self.depth -= bool(self.depth)
        index = next(self.counter)
        attrs = self.read_attrs(layer_kind, module, path, kwargs)
        # Flags given at call time (e.g. use_running_average=False) override the module's own.
        attrs["_call_flags"] = {k: v for k, v in kwargs.items() if isinstance(v, bool)}
        # Only a root copy (path ()) made by `self.lm_head.apply(...)` can hold computed variables; a lifted
        # module (nn.scan, nn.remat) has its path and its sliced checkpoint variables.
        computed = self.computed_variables(module) if not path else {}
        if computed and getattr(module, "name", None):
            path = (str(module.name),)  # self.lm_head.apply(...) runs a root copy: keep the attribute's name
        self.calls[index] = LayerCall(index, layer_kind, path, attrs, self.lookup_variables(module, path),
                                      user_line())
        for (collection, name), value in computed.items():  # the builder computes them from the checkpoint
            variable(value, index, collection, name)
        marked = tuple(enter(a, index) if _is_array(a) else a for a in args)
        kwargs = mark_keywords(layer_kind.side_keywords, kwargs, index)
        self.depth += 1
        try:
            out = run(*marked, **kwargs)
        finally:
            self.depth -= 1
        if _is_array(out):
            return exit_(out, index)
        import jax

        leaves, tree = jax.tree_util.tree_flatten(out)
        if not (layer_kind.output_refs and attrs.get("_multi_output") and leaves and all(map(_is_array, leaves))):
            raise ConversionError(
                "UNSUPPORTED_OPERATION",
                f"layer {'/'.join(path) or type(module).__name__} returned {type(out).__name__}, not one array",
                "layers that return tuples or dicts cannot be converted yet",
            )
        # Each leaf is one output tensor of the layer (see LayerKind.output_refs).
        return jax.tree_util.tree_unflatten(tree, [exit_(leaf, index, k) for k, leaf in enumerate(leaves)])


    def read_attrs(self, layer_kind: LayerKind, module: Any, path: TreePath, kwargs: dict) -> dict:
        """The kind's attributes of this call; the call itself (keywords, path, the submodules'
        variables, the user's line) is passed to the kind as a :class:`CallContext` argument."""
        if not layer_kind.read_attrs:
            return {}
        context = CallContext(dict(kwargs), tuple(path), lambda at: self.lookup_variables(module, tuple(at)),
                              line=user_line(), module_name=type(module).__name__)
        return layer_kind.read_attrs(module, context)


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _abstract_inputs(inputs: list[InputSpec], batch: Any = TRACE_BATCH) -> list:
    import jax

    return [jax.ShapeDtypeStruct((batch, *spec.shape), np.dtype(spec.dtype)) for spec in inputs]


def trace_linen(module: Any, variables: dict[str, dict[TreePath, TensorRef]], inputs: list[InputSpec],
                batch: Any = TRACE_BATCH, call: CallSpec = CallSpec()) -> Trace:
    """Trace a Linen module with variables given as flat ``{collection: {path: TensorRef}}``, called as
    ``call`` says (default: ``__call__`` with the inputs positionally); ``batch`` is the batch size
    traced with (an int, or a symbolic dimension for a GraphModel).

    Example:
        >>> trace = trace_linen(CNN(), {"params": params}, [InputSpec("input", (28, 28, 1))])  # doctest: +SKIP
    """
    import flax.linen as nn
    import jax

    def lookup(bound_module: Any, path: TreePath) -> dict[tuple[str, str], TensorRef]:
        found = {}
        for collection, tree in variables.items():
            for leaf_path, ref in tree.items():
                if leaf_path[:-1] == path:
                    found[(collection, leaf_path[-1])] = ref
        return found

    parameter_leaves: set[int] = set()  # ids of the traced checkpoint leaves, set by run()

    def computed(bound_module: Any) -> dict[tuple[str, str], Any]:
        """The module's own variables that are not checkpoint leaves: computed by the model and passed
        through ``module.apply({"params": ...})`` (a tied LM head, a weight-normed kernel)."""
        try:
            own = bound_module.variables
        except Exception:  # an unbound module has none
            return {}
        leaves = {(collection, name): leaf for collection, tree in own.items() for name, leaf in tree.items()
                  if _is_array(leaf)}
        # One computed leaf: all of them are passed explicitly (Wav2Vec2 passes its own bias beside the kernel).
        return leaves if any(id(leaf) not in parameter_leaves for leaf in leaves.values()) else {}

    recorder = _Recorder(lookup, computed)

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        return recorder.call(context.module, tuple(context.module.path), next_fun, args, kwargs)

    abstract = {collection: nest({p: jax.ShapeDtypeStruct(r.shape, _trace_dtype(r)) for p, r in tree.items()})
                for collection, tree in variables.items() if tree}
    def run(variables_tree, *xs):
        parameter_leaves.update(id(leaf) for leaf in jax.tree_util.tree_leaves(variables_tree))
        with nn.intercept_methods(interceptor):
            return call.linen_apply(module, variables_tree, list(xs))

    jaxpr = _make_jaxpr(run, abstract, _abstract_inputs(inputs, batch))
    return Trace(jaxpr, recorder.calls, inputs, linen_refs(abstract, variables))


def trace_nnx(model: Any, inputs: list[InputSpec],
              variables: dict[str, dict[TreePath, TensorRef]] | None = None, batch: Any = TRACE_BATCH,
              call: CallSpec = CallSpec()) -> Trace:
    """Trace a live NNX module in eval mode; its variables are taken from the module,
    or from ``variables`` (a checkpoint, matched by path) when given.

    Example:
        >>> trace = trace_nnx(nnx.Linear(4, 2, rngs=nnx.Rngs(0)), [InputSpec("input", (4,))])  # doctest: +SKIP
    """
    from flax import nnx

    model.eval()
    graphdef, state = nnx.split(model)
    live = {id(node): path for path, node in _nnx_modules(model)}
    originals = {id_: node for path, node in _nnx_modules(model) for id_ in [id(node)]}
    paths: dict[int, TreePath] = {}

    def lookup(merged_module: Any, path: TreePath) -> dict[tuple[str, str], TensorRef]:
        original = next(node for p, node in _nnx_modules(model) if p == path)
        live_variables = _nnx_variables(original, path)
        if variables is None:
            return live_variables
        return {key: _checkpoint_tensor(variables, path, key, ref) for key, ref in live_variables.items()}

    recorder = _Recorder(lookup)

    def run(state_tree, *xs):
        merged = nnx.merge(graphdef, state_tree)
        paths.clear()
        paths.update({id(node): path for path, node in _nnx_modules(merged)})
        with _patched_nnx_calls(recorder, paths, lambda: _nnx_modules(model)):
            return call.nnx_call(merged, list(xs))

    import jax

    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
    jaxpr = _make_jaxpr(run, abstract, _abstract_inputs(inputs, batch))
    del live, originals
    return Trace(jaxpr, recorder.calls, inputs, nnx_refs(state, variables))


def _checkpoint_tensor(variables: dict[str, dict[TreePath, TensorRef]], path: TreePath, key: tuple[str, str],
                       live: TensorRef) -> TensorRef:
    name = key[1]
    for tree in variables.values():
        for candidate in ((*path, name), (*path, name, "value")):
            if candidate in tree:
                return tree[candidate]
    raise ConversionError(
        "MISSING_PARAMETER", f"the model needs {'/'.join((*path, name))} {live.shape}, which the checkpoint does not have",
        "check that the checkpoint was saved from this model (nnx.state(model))",
    )


def _nnx_modules(model: Any) -> Iterator[tuple[TreePath, Any]]:
    from flax import nnx

    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module):
            yield tuple(str(p) for p in path), node


def _nnx_variables(module: Any, path: TreePath) -> dict[tuple[str, str], TensorRef]:
    from flax import nnx

    found = {}
    for name, value in vars(module).items():
        if isinstance(value, nnx.Variable) and _is_array(value.get_value() if hasattr(value, "get_value") else value.value):
            array = np.asarray(value.get_value() if hasattr(value, "get_value") else value.value)
            collection = "batch_stats" if isinstance(value, nnx.BatchStat) else "params"
            ref_path = (collection, *path, name)
            found[(collection, name)] = TensorRef(ref_path, tuple(array.shape), array.dtype,
                                                  lambda a=array: a, "live NNX module")
    return found


@contextlib.contextmanager
def _patched_nnx_calls(recorder: _Recorder, paths: dict[int, TreePath], modules: Callable[[], Any] = lambda: ()):
    classes = []
    for layer_kind in REGISTRY.values():
        for spec in layer_kind.flax_classes:
            module_name, _, class_name = spec.partition(":")
            if module_name.startswith("flax.nnx"):
                classes.append(getattr(importlib.import_module(module_name), class_name))
    saved = {cls: cls.__dict__.get("__call__") for cls in classes}
    for cls in classes:
        original = cls.__call__

        def patched(self, *args, __original=original, **kwargs):
            run = lambda *a, **k: __original(self, *a, **k)  # noqa: E731
            path = paths.get(id(self))
            if path is None and recorder.depth == 0:  # a copy made by nnx.scan / nnx.remat: placed by type and shapes
                path = place(self, modules())
            return recorder.call(self, path or (), run, args, kwargs)

        cls.__call__ = patched
    try:
        yield
    finally:
        for cls, original in saved.items():
            if original is None:
                del cls.__call__
            else:
                cls.__call__ = original


def _make_jaxpr(run: Callable, abstract_variables: Any, abstract_inputs: list) -> Any:
    import jax

    try:
        return jax.make_jaxpr(run)(abstract_variables, *abstract_inputs)
    except ConversionError:
        raise
    except Exception as exc:  # Flax's own errors name the missing or misshapen variable
        converted = flax_error_to_conversion_error(exc) or model_error(exc, _shapes_text(abstract_inputs), TRACE_BATCH)
        if converted is None:
            raise
        raise converted from exc


def _shapes_text(abstract_inputs: list) -> str:
    return " and ".join(f"{tuple(x.shape)} {np.dtype(x.dtype).name}" for x in abstract_inputs)


def _trace_dtype(ref: TensorRef) -> np.dtype:
    # Weights are written as float32; trace with what tfjs will compute with.
    return np.dtype("float32") if ref.dtype.kind == "f" or ref.dtype.name == "bfloat16" else ref.dtype


def nest(flat: dict[TreePath, Any]) -> dict:
    """A nested dict from a flat ``{path: value}`` (the layout Flax's ``apply`` takes).

    Example:
        >>> nest({("params", "Dense_0", "kernel"): 1, ("params", "Dense_0", "bias"): 2})
        {'params': {'Dense_0': {'kernel': 1, 'bias': 2}}}
    """
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree
