"""The conversion pipeline: read -> select variables -> layer graph -> topology -> weights -> model.json."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from topology.graph import LayerGraph
from topology.infer import TemplateOptions, infer_graph
from topology.keras_json import model_topology
from writer.errors import ConversionError, Notices
from writer.model_json import dumps_model_json, validate_model_json
from writer.output import check_destination, staged_output
from writer.provenance import content_sha256
from writer.quantize import QUANTIZE_DTYPES, QuantizeOptions
from writer.readers import read_checkpoint
from writer.report import LayerRow, Report
from writer.shards import DEFAULT_SHARD_BYTES
from writer.tensors import Checkpoint
from writer.variables import select_variables
from writer.version import __version__
from writer.weights import Progress, write_weights


@dataclass(frozen=True)
class ConvertOptions:
    """Every option of a conversion (the CLI flags, by the same names).

    Example:
        >>> ConvertOptions(quantize="uint8").weight_shard_size_bytes
        4194304
    """

    input_shape: tuple[int, ...] | None = None
    activation: str = "relu"
    pool: str = "avg"
    quantize: str | None = None
    quantize_weights: tuple[str, ...] = ()
    weight_shard_size_bytes: int = DEFAULT_SHARD_BYTES
    metadata: dict = field(default_factory=dict)
    force: bool = False
    step: int | None = None
    allow_nonfinite: bool = False

    def check(self) -> None:
        if self.quantize is not None and self.quantize not in QUANTIZE_DTYPES:
            raise ConversionError("BAD_OPTION", f"--quantize {self.quantize}", f"choose one of {', '.join(QUANTIZE_DTYPES)}")
        if self.quantize_weights and self.quantize is None:
            raise ConversionError("BAD_OPTION", "--quantize-weights needs --quantize", "add e.g. --quantize uint8")
        if self.weight_shard_size_bytes < 1:
            raise ConversionError("BAD_OPTION", f"--weight-shard-size-bytes {self.weight_shard_size_bytes}", "use a positive size, e.g. 4194304")
        if self.input_shape is not None and (not self.input_shape or min(self.input_shape) < 1):
            raise ConversionError("BAD_OPTION", f"--input-shape {self.input_shape}", "give positive sizes without the batch axis, e.g. 28,28,1")


def convert_checkpoint(source: str | Path, out_dir: str | Path, options: ConvertOptions = ConvertOptions(),
                       progress: Progress | None = None) -> Report:
    """Convert a checkpoint (no model code) into ``out_dir``; return the report.

    Example:
        >>> report = convert_checkpoint("examples/mnist_ckpt", "out")   # doctest: +SKIP
        >>> report.param_count                                           # doctest: +SKIP
        824458
    """
    started = time.perf_counter()
    source, out_dir = Path(source), Path(out_dir)
    options.check()
    check_destination(out_dir, options.force)  # fail before any reading
    notices = Notices()
    with read_checkpoint(source, options.step) as checkpoint:
        variables = select_variables(checkpoint, notices)
        template = TemplateOptions(options.input_shape, options.activation, options.pool)
        graph = infer_graph(variables, template, notices)
        return write_model(graph, checkpoint, out_dir, options, notices, started, "inferred", progress)


def write_model(graph: LayerGraph, checkpoint: Checkpoint, out_dir: Path, options: ConvertOptions,
                notices: Notices, started: float, topology_kind: str, progress: Progress | None = None) -> Report:
    """Write ``graph`` with its weights as a complete model folder, atomically."""
    quantization = QuantizeOptions(options.quantize, tuple(options.quantize_weights))
    topology = model_topology(graph)
    with staged_output(out_dir, options.force) as staging:
        written = write_weights(graph.weight_bindings(), staging, options.weight_shard_size_bytes,
                                quantization, notices, options.allow_nonfinite, progress)
        provenance = {
            "version": __version__,
            "source": {"name": checkpoint.path.name, "format": checkpoint.format,
                       "sha256": content_sha256(checkpoint.path), "step": checkpoint.step},
            "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in graph.inputs],
            "topology": topology_kind,
            "quantization": {"dtype": options.quantize, "weights": list(options.quantize_weights) or ["*"]}
            if options.quantize else None,
            "notices": [n.to_json() for n in notices.items],
        }
        document = {
            "format": "layers-model",
            "generatedBy": f"flax2tfjs {__version__}",
            "convertedBy": f"flax2tfjs {__version__}",
            "modelTopology": topology,
            "weightsManifest": [written.manifest_group],
            "userDefinedMetadata": {"flax2tfjs": provenance, **options.metadata},
        }
        validate_model_json(document)
        text = dumps_model_json(document)
        (staging / "model.json").write_text(text, encoding="utf-8")
    return Report(
        out_dir=out_dir, source=checkpoint.path, format=checkpoint.format, step=checkpoint.step,
        inputs=list(graph.inputs),
        layers=[LayerRow(l.name, l.class_name, l.output_shape, l.param_count, l.origin) for l in graph.layers],
        param_count=graph.param_count, bytes_written=written.total_bytes + len(text.encode("utf-8")),
        shards=written.files, quantization=options.quantize, quantized_weights=written.quantized,
        notices=list(notices.items), seconds=time.perf_counter() - started, topology=topology_kind,
    )
