"""The conversion pipeline: read -> select variables -> layer graph -> topology -> weights -> model.json."""
from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from topology.graph import InputSpec, LayerGraph
from topology.graphdef import function_graphdef, trace_graphdef
from topology.graphdef.nodes import GraphDef
from topology.infer import TemplateOptions, infer_graph
from topology.keras_json import model_topology
from topology.optimize import optimize_graph
from topology.trace import trace_graph
from topology.trace.call_spec import CallSpec, as_call_spec
from topology.vocabulary.errors import ConversionError, Notices
from writer.budget import check_free_space, check_output_budget, input_bytes
from writer.events import EventSink, EventStream
from writer.fixes import fit_module, fit_template
from writer.graph_model import FunctionSource, write_graph_model
from writer.hf_folder import hf_folder_config, open_hf_folder
from writer.layer_names import sanitize_layer_names
from writer.module_loader import user_code
from writer.model_json import assemble_model_json, check_model_json, write_model_json
from writer.weight_targets import check_weight_targets
from writer.output import check_destination, staged_output
from writer.provenance import check_metadata
from writer.quantize import QUANTIZE_DTYPES, QuantizeOptions
from writer.report import LayerRow, Report
from writer.shards import DEFAULT_SHARD_BYTES
from writer.sources import Source, resolve_source
from writer.version import __version__
from writer.weights import Progress, write_weights


INPUT_DTYPES = ("float32", "int32")  # model inputs: values, or token ids
MIN_SHARD_BYTES = 4096  # a shard per 1 byte made a file per byte; 4 KiB is one file-system block
FORMATS = ("layers-model", "graph-model", "auto")  # what is written (docs/graph-model.md)


@dataclass(frozen=True)
class ConvertOptions:
    """Every option of a conversion (the CLI flags, by the same names).

    Example:
        >>> ConvertOptions(quantize="uint8").weight_shard_size_bytes
        4194304
    """

    input_shape: Any = None  # a shape (28, 28, 1), or a list of shapes for several inputs
    # "float32" | "int32", or one per input. None: float32, or int32 token ids where an nn.Embed reads the
    # input (fixed[INPUT_DTYPE]); a dtype given is never replaced.
    input_dtype: Any = None
    module: Any = None  # model code: "file.py:Name", "pkg.mod:Name", or a module/class object
    call: Any = None  # how the module is called: --call text ("encode(*, train=False)"), a CallSpec, or None
    activation: str = "relu"
    pool: str = "avg"
    quantize: str | None = None
    quantize_weights: tuple[str, ...] = ()
    weight_shard_size_bytes: int = DEFAULT_SHARD_BYTES
    metadata: dict = field(default_factory=dict)
    force: bool = False
    step: int | None = None
    allow_nonfinite: bool = False
    allow_sparse: bool = False  # lift the output budget (writer/budget.py) for legitimately sparse checkpoints
    fix: bool = True  # automatic fixes of keys, shapes, dtypes and the input shape (--no-fix: off)
    full_hash: bool = False  # provenance: the full sha256 of checkpoints over 64 MiB too (else a sampled fingerprint)
    optimize: bool = True  # exact graph rewrites (topology/optimize/): fold BatchNorm, drop identities, ...
    preset: dict | None = None  # --preset applied: {"name", "set": {option: value}, "overridden": [option]}
    format: str = "layers-model"  # "layers-model" | "graph-model" (any JAX ops, from the jaxpr) | "auto"

    def call_spec(self) -> CallSpec:
        """``call`` as a CallSpec (BAD_CALL_SPEC for text that is not a call)."""
        return as_call_spec(self.call)

    def check(self) -> None:
        if self.format not in FORMATS:
            raise ConversionError("BAD_OPTION", f"--format {self.format}", f"choose one of {', '.join(FORMATS)}")
        if self.call is not None and self.module is None and not isinstance(self.call, CallSpec):
            self.call_spec()  # parse errors first; whether a module is needed is decided by the source
        if self.quantize is not None and self.quantize not in QUANTIZE_DTYPES:
            raise ConversionError("BAD_OPTION", f"--quantize {self.quantize}", f"choose one of {', '.join(QUANTIZE_DTYPES)}")
        if self.quantize_weights and self.quantize is None:
            raise ConversionError("BAD_OPTION", "--quantize-weights needs --quantize", "add e.g. --quantize uint8")
        if self.weight_shard_size_bytes < MIN_SHARD_BYTES:
            raise ConversionError(
                "BAD_OPTION", f"--weight-shard-size-bytes {self.weight_shard_size_bytes} is below the minimum of "
                f"{MIN_SHARD_BYTES} bytes (smaller shards would write one file per few bytes)",
                "use at least 4096, e.g. 4194304 (4 MiB, the default)")
        check_metadata(self.metadata)
        for shape in self.input_shapes():
            if shape and min(shape) < 1:  # () is a per-example scalar input
                raise ConversionError("BAD_OPTION", f"input shape {shape}", "give positive sizes without the batch axis, e.g. 28,28,1")
        for dtype in self.input_dtypes(max(1, len(self.input_shapes()))):
            if dtype not in INPUT_DTYPES:
                raise ConversionError("BAD_OPTION", f"--input-dtype {dtype}", f"choose {' or '.join(INPUT_DTYPES)}")

    def input_shapes(self) -> list[tuple[int, ...]]:
        """Every input shape given (empty when none was)."""
        if self.input_shape is None:
            return []
        shape = list(self.input_shape)
        if not shape:  # () or "": one number per example (a length, a scalar feature), given explicitly
            return [()]
        if shape and all(isinstance(d, (int, np.integer)) for d in shape):
            return [tuple(int(d) for d in shape)]
        return [tuple(int(d) for d in s) for s in shape]

    def single_input_shape(self) -> tuple[int, ...] | None:
        shapes = self.input_shapes()
        if len(shapes) > 1:
            raise ConversionError("BAD_OPTION", "several input shapes need the model code (--module)",
                                  "pass --module path/to/model.py:Model")
        return shapes[0] if shapes else None

    def input_dtypes(self, count: int) -> list[str]:
        if self.input_dtype is None:
            return ["float32"] * count
        dtypes = [self.input_dtype] * count if isinstance(self.input_dtype, str) else list(self.input_dtype)
        if len(dtypes) == 1 and count > 1:
            dtypes *= count
        if len(dtypes) != count:
            raise ConversionError("BAD_OPTION", f"{len(dtypes)} input dtypes for {count} inputs", "give one per --input-shape")
        return [str(d) for d in dtypes]


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
                              options.step, notices, options.fix, options.full_hash)
    try:
        if options.format != "layers-model":
            graphdef, inputs, traced = choose_format(resolved, options, notices, stream)
            if graphdef is not None:
                stream.stage("write")
                return write_graph_model(graphdef, resolved, out_dir, options, notices, started, inputs, progress,
                                         stream)
        else:
            traced = None
        graph, kind = build_graph(resolved, options, notices, stream, traced)
        stream.stage("write")
        return write_model(graph, resolved, out_dir, options, notices, started, kind, progress, stream)
    finally:
        resolved.close()


def choose_format(resolved: Source, options: ConvertOptions, notices: Notices,
                  events: EventStream | None = None) -> tuple[GraphDef | None, list[InputSpec], LayerGraph | None]:
    """The GraphDef to write for ``--format graph-model``, or for ``auto`` when the layers emitter
    refuses the model (with a notice saying why); ``(None, inputs, traced)`` when ``auto`` keeps the
    LayersModel, ``traced`` being the layer graph it traced (for :func:`build_graph`, which then neither
    fits nor traces again; None without model code).

    Example:
        >>> graphdef, inputs, traced = choose_format(resolve_source(...), ConvertOptions(format="auto"), Notices())  # doctest: +SKIP
    """
    stream = events or EventStream(None)
    if resolved.module is None:
        if options.format == "auto":
            return None, [], None
        raise ConversionError(
            "GRAPH_MODEL_NEEDS_MODULE", f"--format graph-model traces the model code, and none was given for {resolved.name}",
            "pass --module path/to/model.py:Model (or use --format layers-model, which can infer small CNNs and MLPs)",
        )
    resolved.call = options.call_spec()
    stream.stage("fix")
    inputs = fit_inputs(resolved, options, notices)
    stream.stage("graph")
    inputs = _named_by_call(inputs, resolved.call)
    if options.format == "auto":
        try:
            return None, inputs, trace_graph(resolved.module, inputs, resolved.variables.collections or None,
                                             resolved.call)
        except ConversionError as refused:
            notices.warn("FORMAT_AUTO", f"writing a GraphModel: the LayersModel emitter refused the model "
                                        f"(error[{refused.code}]: {refused.message})")
    return trace_graphdef(resolved.module, inputs, resolved.variables.collections or None, options.optimize,
                          notices, call=resolved.call), inputs, None


def fit_inputs(resolved: Source, options: ConvertOptions, notices: Notices) -> list[InputSpec]:
    """The model inputs (given, or solved), after fitting the variables to the model code;
    ``resolved.variables`` is replaced by the fitted variables."""
    try:  # given, or solved by the template; fit_module checks them against the model
        inputs, solved = _input_specs(resolved, options, Notices()), not options.input_shapes()
    except ConversionError as err:
        if err.code != "INPUT_SHAPE_REQUIRED":
            raise
        inputs, solved = None, True
    solved_dtype = None if inputs else options.input_dtypes(1)[0]  # only read when no inputs are known
    resolved.variables, inputs = fit_module(resolved, inputs, notices, solved, enabled=options.fix,
                                            input_dtype=solved_dtype, dtype_given=options.input_dtype is not None)
    return inputs


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


def build_graph(resolved: Source, options: ConvertOptions, notices: Notices,
                events: EventStream | None = None, traced: LayerGraph | None = None) -> tuple[LayerGraph, str]:
    """The layer graph to write (fixes applied, then ``--optimize``'s rewrites) and "inferred" or
    "traced"; ``events`` hears the ``fix`` and ``graph`` stages. ``traced``: the graph
    :func:`choose_format` already traced from the fitted variables (``--format auto``), used as is.

    ``resolved.variables`` is replaced by the fitted variables the weights are bound to.

    Example:
        >>> graph, kind = build_graph(resolve_source(...), ConvertOptions(), Notices())   # doctest: +SKIP
        >>> graph.rewrites[0]["rewrite"]                                                  # doctest: +SKIP
        'fold_batchnorm'
    """
    stream = events or EventStream(None)
    if resolved.module is None and options.call is not None:
        raise ConversionError("BAD_OPTION", f"--call/--method {options.call_spec().text()} without model code: the "
                              f"template inferred from {resolved.name} has no methods",
                              "pass the model with --module FILE.py:NAME (or convert a Hugging Face folder)")
    if resolved.module is None:
        template = TemplateOptions(options.single_input_shape(), options.activation, options.pool)
        stream.stage("fix")
        resolved.variables, template = fit_template(resolved.variables, template, resolved.name, notices, options.fix)
        stream.stage("graph")
        graph = infer_graph(resolved.variables, template, notices)
        kind = "inferred"
    else:
        if traced is None:
            resolved.call = options.call_spec()
            stream.stage("fix")
            inputs = fit_inputs(resolved, options, notices)
            stream.stage("graph")
            inputs = _named_by_call(inputs, resolved.call)
            traced = trace_graph(resolved.module, inputs, resolved.variables.collections or None, resolved.call)
        graph, kind = traced, "traced"
        if graph.unused:
            names = ", ".join(dict.fromkeys(graph.unused))
            notices.warn("UNUSED_RESULT", f"{len(graph.unused)} layer(s) computed a result the model never uses "
                                          f"and were left out: {names}")
    if options.optimize:
        graph = optimize_graph(graph)
    return graph, kind


def _named_by_call(inputs: list[InputSpec], call: CallSpec) -> list[InputSpec]:
    """Inputs passed by keyword are named after it in model.json (``input_ids``, ``attention_mask``)."""
    names = call.input_names(len(inputs))
    return [InputSpec(name or spec.name, spec.shape, spec.dtype) for spec, name in zip(inputs, names)]


def _input_specs(source: Source, options: ConvertOptions, notices: Notices) -> list[InputSpec]:
    shapes = options.input_shapes()
    if not shapes:
        try:
            solved = infer_graph(source.variables, TemplateOptions(), Notices()).inputs[0].shape
        except ConversionError:
            raise ConversionError(
                "INPUT_SHAPE_REQUIRED", f"the input shape of {source.name} cannot be read from its parameters",
                "pass --input-shape (without the batch axis), e.g. --input-shape 28,28,1",
            ) from None
        notices.assume("INPUT_SHAPE", f"input shape {','.join(map(str, solved))} solved from the parameter shapes "
                                      "(override with --input-shape)")
        shapes = [solved]
    dtypes = options.input_dtypes(len(shapes))
    names = ["input"] if len(shapes) == 1 else [f"input_{i + 1}" for i in range(len(shapes))]
    return [InputSpec(name, tuple(shape), dtype) for name, shape, dtype in zip(names, shapes, dtypes)]


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
                events: EventStream | None = None) -> Report:
    """Write ``graph`` with its weights as a complete model folder, atomically."""
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
                                quantization, notices, options.allow_nonfinite, progress)
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
