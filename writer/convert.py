"""The conversion pipeline, one stage after the other: read -> fit -> graph -> optimize -> write.

read (:mod:`writer.sources`): the checkpoint's variables; fit (:mod:`writer.fit`): the variables
and inputs made to fit the model, and the dtype each weight is written as; graph: the layer graph
inferred or traced (or a GraphDef); optimize (:mod:`topology.optimize`): exact rewrites of a layer
graph (a GraphDef's run as it is emitted, in the graph stage); write: weights, then model.json.
Each stage sends its event when it starts (:data:`writer.events.STAGES`; the fit stage's is "fix").
"""
from __future__ import annotations

import contextlib
import gc
import time
from pathlib import Path
from typing import Any

from topology.graph import InputSpec, LayerGraph
from topology.graphdef import function_graphdef, trace_graphdef
from topology.graphdef.nodes import GraphDef
from topology.infer import infer_graph
from topology.keras_json import model_topology
from topology.optimize import optimize_graph
from topology.trace import trace_graph
from topology.vocabulary.errors import ConversionError, Notices
from writer.budget import check_free_space, check_output_budget, input_bytes
from writer.events import EventSink, EventStream
from writer.fit import Fitted, fit
from writer.graph_model import FunctionSource, write_graph_model
from writer.hf_folder import hf_folder_config, open_hf_folder
from writer.layer_names import sanitize_layer_names
from writer.module_loader import user_code
from writer.model_json import assemble_model_json, check_model_json, write_model_json
from writer.options import FORMATS, INPUT_DTYPES, MIN_SHARD_BYTES, ConvertOptions  # noqa: F401  (their home was here)
from writer.weight_targets import check_weight_targets
from writer.output import check_destination, staged_output
from writer.quantize import QuantizeOptions
from writer.report import LayerRow, Report
from writer.sources import Source, resolve_source
from writer.version import __version__
from writer.weight_dtypes import DtypePolicy
from writer.weights import Progress, write_weights


def convert(source: Any, out_dir: str | Path, options: ConvertOptions = ConvertOptions(), *,
            module: Any = None, variables: Any = None, progress: Progress | None = None,
            events: EventSink | None = None) -> Report:
    """Convert any supported source into ``out_dir``; see :func:`writer.to_tensorflowjs`.

    ``events`` receives the stages, notices and per-tensor progress as they
    happen (see :mod:`writer.events`); raising from it cancels the conversion.

    Example:
        >>> report = convert("examples/mnist_ckpt", "out")                 # doctest: +SKIP
        >>> report.param_count                                              # doctest: +SKIP
        824458
    """
    with fewer_collections(), user_code("the model's code"):
        return _convert(source, out_dir, options, module, variables, progress, events)


@contextlib.contextmanager
def fewer_collections(young: int = 20_000):
    """Run the young-generation garbage collection every ``young`` allocations instead of 700.

    A model of 100,000 tiny layers makes millions of long-lived objects (tensor references,
    bindings, configs); at the default threshold Python's collector re-scanned them so often that it
    took half of the conversion's CPU time. The old thresholds come back afterwards.

    Example:
        >>> with fewer_collections():
        ...     gc.get_threshold()[0]
        20000
    """
    before = gc.get_threshold()
    gc.set_threshold(max(young, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _convert(source: Any, out_dir: str | Path, options: ConvertOptions, module: Any, variables: Any,
             progress: Progress | None, events: EventSink | None) -> Report:
    started = time.perf_counter()
    out_dir = Path(out_dir)
    options.check()
    source = Path(source) if isinstance(source, str) else source
    hf_notice = None
    if isinstance(source, Path) and module is None and options.module is None:
        source, module, options, hf_notice = hf_folder_source(source, options)
    check_destination(out_dir, options.force, source if isinstance(source, Path) else None)  # before any reading
    stream = EventStream(events)
    notices = Notices(listener=stream.notice)
    if hf_notice:
        notices.assume("HF_FOLDER", hf_notice)
    stream.stage("read")
    resolved = resolve_source(source, module if module is not None else options.module, variables,
                              options.step, notices, options.fix, options.full_hash, select=False)
    try:
        stream.stage("fix")
        fitted = fit(resolved, options, notices)
        stream.stage("graph")
        graph = graph_stage(fitted, resolved, options, notices)
        stream.stage("optimize")  # every format announces it: the same stages whatever is written
        if not isinstance(graph, LayerGraph):  # a GraphDef (--format graph-model, or auto refused by the layers):
            stream.stage("write")             # its exact rewrites run as it is emitted (topology/graphdef/emit.py)
            return write_graph_model(graph, resolved, out_dir, options, notices, started, fitted.inputs, progress,
                                     stream, fitted.dtype_policy)
        if options.optimize:
            graph = optimize_graph(graph)
        stream.stage("write")
        return write_model(graph, resolved, out_dir, options, notices, started, topology_kind(fitted), progress,
                           stream, fitted.dtype_policy)
    finally:
        resolved.close()


def graph_stage(fitted: Fitted, source: Source, options: ConvertOptions, notices: Notices) -> LayerGraph | GraphDef:
    """The graph of the fitted model: the template's layer graph inferred from the parameters, or
    the model code traced into a layer graph (``--format layers-model``, or ``auto`` when the layers
    emitter takes it) or into a GraphDef (``graph-model``, or ``auto`` with a notice saying why).
    ``--optimize``'s rewrites of a layer graph are the next stage's.

    Example:
        >>> graph = graph_stage(fit(source, ConvertOptions(), Notices()), source, ConvertOptions(), Notices())  # doctest: +SKIP
    """
    if fitted.template is not None:
        return infer_graph(fitted.variables, fitted.template, notices)
    if options.format == "layers-model":
        return traced_layers(source, fitted.inputs, notices)
    if options.format == "auto":
        try:
            return traced_layers(source, fitted.inputs, notices)
        except ConversionError as refused:
            notices.warn("FORMAT_AUTO", f"writing a GraphModel: the LayersModel emitter refused the model "
                                        f"(error[{refused.code}]: {refused.message})")
    return trace_graphdef(source.module, fitted.inputs, source.variables.collections or None, options.optimize,
                          notices, call=source.call)


def traced_layers(source: Source, inputs: list[InputSpec], notices: Notices) -> LayerGraph:
    """The model code traced into layers, on the fitted variables (layers whose result is never used
    are left out, with a warning).

    Example:
        >>> traced_layers(source, [InputSpec("input", (4,))], Notices()).layers[0].class_name   # doctest: +SKIP
        'InputLayer'
    """
    graph = trace_graph(source.module, inputs, source.variables.collections or None, source.call)
    if graph.unused:
        names = ", ".join(dict.fromkeys(graph.unused))
        notices.warn("UNUSED_RESULT", f"{len(graph.unused)} layer(s) computed a result the model never uses "
                                      f"and were left out: {names}")
    return graph


def topology_kind(fitted: Fitted) -> str:
    """How the layer graph was made, as the provenance says: ``"inferred"`` or ``"traced"``."""
    return "inferred" if fitted.front_end == "template" else "traced"


def choose_format(resolved: Source, options: ConvertOptions,
                  notices: Notices) -> tuple[GraphDef | None, list[InputSpec], LayerGraph | None]:
    """For ``inspect``: the GraphDef that ``--format graph-model`` (or ``auto``, when the layers emitter
    refuses the model) writes, or ``(None, inputs, traced)`` when ``auto`` keeps the LayersModel,
    ``traced`` being the layer graph it traced (for :func:`build_graph`; None without model code).

    Example:
        >>> graphdef, inputs, traced = choose_format(resolve_source(...), ConvertOptions(format="auto"), Notices())  # doctest: +SKIP
    """
    if resolved.module is None and options.format == "auto":
        return None, [], None
    fitted = fit(resolved, options, notices)
    graph = graph_stage(fitted, resolved, options, notices)
    if isinstance(graph, LayerGraph):
        return None, fitted.inputs or [], graph
    return graph, fitted.inputs or [], None


def build_graph(resolved: Source, options: ConvertOptions, notices: Notices,
                traced: LayerGraph | None = None) -> tuple[LayerGraph, str]:
    """For ``inspect`` and ``verify``: the fit, graph and optimize stages of a LayersModel, giving the
    layer graph and "inferred" or "traced". ``traced``: the graph :func:`choose_format` already
    traced from the fitted variables (``--format auto``), used as is.

    ``resolved.variables`` is replaced by the fitted variables the weights are bound to.

    Example:
        >>> graph, kind = build_graph(resolve_source(...), ConvertOptions(), Notices())   # doctest: +SKIP
        >>> graph.rewrites[0]["rewrite"]                                                  # doctest: +SKIP
        'fold_batchnorm'
    """
    if traced is not None:
        graph, kind = traced, "traced"
    else:
        fitted = fit(resolved, options, notices)
        graph, kind = graph_stage(fitted, resolved, options, notices), topology_kind(fitted)
    return (optimize_graph(graph) if options.optimize else graph), kind


def hf_folder_source(path: Path, options: ConvertOptions) -> tuple[Path, Any, ConvertOptions, str | None]:
    """A Hugging Face ``save_pretrained`` folder as its weights file, its Flax module, the options that
    call it and the assumption to report (see :mod:`writer.hf_folder`); any other path as it is.

    Example:
        >>> path, module, options, notice = hf_folder_source(Path("examples/mnist_ckpt"), ConvertOptions())
        >>> module is None and notice is None and options == ConvertOptions()
        True
    """
    config = hf_folder_config(path)
    if config is None:
        return path, None, options, None
    model = open_hf_folder(path, config, options)
    return model.weights, model.module, model.options, model.notice


def _refuse_empty_weights(graph: LayerGraph) -> None:
    for name, binding in graph.weight_bindings():
        if 0 in tuple(binding.shape):
            raise ConversionError(
                "EMPTY_WEIGHT", f"weight {name} has shape {tuple(binding.shape)}, which holds no values",
                "a layer with zero units or zero inputs cannot run in TF.js; check the model's sizes, "
                "or save the checkpoint again",
            )


def write_model(graph: LayerGraph, source: Source, out_dir: Path, options: ConvertOptions,
                notices: Notices, started: float, topology_kind: str, progress: Progress | None = None,
                events: EventStream | None = None, dtype_policy: DtypePolicy | None = None) -> Report:
    """Write ``graph`` with its weights as a complete model folder, atomically; each weight's dtype is
    written as ``dtype_policy`` (the fit stage's) says."""
    quantization = QuantizeOptions(options.quantize, tuple(options.quantize_weights))
    _refuse_empty_weights(graph)
    sanitize_layer_names(graph, notices)
    topology = model_topology(graph)
    bindings = graph.weight_bindings()
    planned = check_output_budget(bindings, quantization, input_bytes(source.path), options.allow_sparse)
    check_free_space(out_dir, planned, len(bindings))
    with staged_output(out_dir, options.force, source.path) as staging:
        if events is not None:  # one event per tensor, with the exact totals up front
            progress = events.tensor_progress(len(bindings), planned, progress)
        written = write_weights(bindings, staging, options.weight_shard_size_bytes,
                                quantization, notices, options.allow_nonfinite, progress, dtype_policy)
        provenance = {
            "version": __version__,
            "source": {"name": source.name, "format": source.format, **source.digest(), "step": source.step},
            "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in graph.inputs],
            "topology": topology_kind,
            "quantization": {"dtype": options.quantize, "weights": list(options.quantize_weights) or ["*"]}
            if options.quantize else None,
            "notices": [n.to_json() for n in notices.items],
            "optimize": {"enabled": options.optimize, "rewrites": graph.rewrites},
        }
        if options.preset:  # only then: the same options without a preset still give the same bytes
            provenance["preset"] = options.preset
        document = assemble_model_json(topology, written.manifest_group, provenance, options.metadata)
        check_model_json(document)
        check_weight_targets(document)  # what TF.js checks at load: never exit 0 with a model it refuses
        json_bytes = write_model_json(staging / "model.json", document)
    return Report(
        out_dir=out_dir, source=source.path or Path(source.name), format=source.format, step=source.step,
        inputs=list(graph.inputs),
        layers=[LayerRow(l.name, l.class_name, l.output_shape, l.param_count, l.origin) for l in graph.layers],
        param_count=graph.param_count, bytes_written=written.total_bytes + json_bytes,
        shards=written.files, quantization=options.quantize, quantized_weights=written.quantized,
        notices=list(notices.items), seconds=time.perf_counter() - started, topology=topology_kind,
        optimized=options.optimize, rewrites=list(graph.rewrites), preset=options.preset,
    )


def convert_function(fn: Any, out_dir: str | Path, inputs: list[InputSpec], options: Any = None) -> Report:
    """Write a GraphModel of ``fn``, a JAX function of batched inputs (``inputs`` without the batch
    axis); arrays it closes over become constants.

    Example:
        >>> import jax.numpy as jnp, tempfile
        >>> out = Path(tempfile.mkdtemp()) / "m"
        >>> convert_function(lambda x: jnp.tanh(x) * 2, out, [InputSpec("x", (3,))]).topology
        'graph-model'
    """
    options = options or ConvertOptions(format="graph-model")
    options.check()
    graph = function_graphdef(fn, inputs, options.optimize)
    name = getattr(fn, "__name__", "function")
    return write_graph_model(graph, FunctionSource(name), Path(out_dir), options, Notices(), time.perf_counter(), inputs)
