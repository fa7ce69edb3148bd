"""Write a GraphModel folder: model.json (a GraphDef, its signature) and the constants' shards.

The parameters, streamed from the checkpoint, go through the same weight writer as a
LayersModel's weights (weight group 1): sharded, checked for NaN/Inf, quantizable. Every other
constant (values folded at conversion time: masks with -inf, position tables, shapes, axes,
indices) is written exactly as group 2 (float32, int32 or bool), never quantized. Everything is written into the staging folder and moved into place at the end.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from topology.graph import InputSpec, WeightBinding
from topology.graphdef.nodes import GraphDef, is_static
from topology.vocabulary.errors import Notices
from writer.model_json import dumps_model_json
from writer.output import staged_output
from writer.quantize import QuantizeOptions
from writer.report import LayerRow, Report
from writer.resources import files
from writer.shards import ShardWriter
from writer.version import __version__
from writer.weight_dtypes import DtypePolicy
from writer.weights import Progress, planned_bytes, write_weights


def assemble_graph_model_json(graph: GraphDef, groups: list[dict], provenance: dict, metadata: dict) -> dict:
    """The model.json document of a GraphModel.

    Example:
        >>> doc = assemble_graph_model_json(GraphDef(), [], {}, {})
        >>> list(doc)[:3], doc["format"]
        (['format', 'generatedBy', 'convertedBy'], 'graph-model')
    """
    return {
        "format": "graph-model",
        "generatedBy": f"flax2tfjs {__version__}",
        "convertedBy": f"flax2tfjs {__version__}",
        "modelTopology": graph.topology(),
        "weightsManifest": groups,
        "signature": graph.signature(),
        "userDefinedMetadata": {"flax2tfjs": provenance, **metadata},
    }


def check_graph_model_json(document: dict) -> None:
    """Check what tf.loadGraphModel depends on; the full schema check as for LayersModels.

    Example:
        >>> check_graph_model_json({"format": "graph-model"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: model.json is malformed: ...
    """
    import os
    import sys

    problems = []
    topology = document.get("modelTopology")
    if document.get("format") != "graph-model":
        problems.append("format is not 'graph-model'")
    if not isinstance(topology, dict) or not isinstance(topology.get("node"), list):
        problems.append("modelTopology needs a node list")
    else:
        names = {node["name"] for node in topology["node"]}
        consts = {node["name"] for node in topology["node"] if node["op"] == "Const"}
        written = {w["name"] for group in document.get("weightsManifest", []) for w in group.get("weights", [])}
        if consts - written:
            problems.append(f"constants without values: {sorted(consts - written)[:3]}")
        runnable = tfjs_ops()
        for node in topology["node"]:
            missing = [i for i in node["input"] if i.split(":")[0] not in names]
            if missing:
                problems.append(f"node {node['name']} reads missing {missing[:2]}")
            if node["op"] not in runnable:
                problems.append(f"node {node['name']} has op {node['op']}, which tfjs-converter 4.22 cannot run")
    if problems:
        raise ValueError("model.json is malformed: " + "; ".join(problems[:5]))
    if os.environ.get("FLAX2TFJS_SCHEMA_CHECK") == "1" or "jsonschema" in sys.modules:
        validate_graph_model_json(document)


@functools.lru_cache(maxsize=None)
def tfjs_ops() -> frozenset[str]:
    """The ops tfjs-converter 4.22 executes (its op list, kept in schemas/graph_model.schema.json).

    Example:
        >>> "BatchMatMulV2" in tfjs_ops(), "XlaCallModule" in tfjs_ops()
        (True, False)
    """
    schema = json.loads((files("schemas") / "graph_model.schema.json").read_text(encoding="utf-8"))
    return frozenset(schema["$defs"]["node"]["properties"]["op"]["enum"])


def validate_graph_model_json(document: dict) -> None:
    """Raise ``ValueError`` listing every violation of schemas/graph_model.schema.json."""
    import jsonschema

    schema = json.loads((files("schemas") / "graph_model.schema.json").read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors[:5])
        raise ValueError(f"model.json violates schemas/graph_model.schema.json: {details}")


def graph_model_summary(graph: GraphDef) -> dict:
    """What ``inspect`` shows of a GraphModel: node and op counts, parameters, inputs and outputs.

    Example:
        >>> graph_model_summary(GraphDef())["nodes"]
        0
    """
    ops: dict[str, int] = {}
    for node in graph.nodes:
        ops[node["op"]] = ops.get(node["op"], 0) + 1
    parameters = [c for c in graph.consts.values() if c.is_parameter]
    return {
        "nodes": len(graph.nodes), "ops": ops, "parameters": len(parameters),
        "param_count": sum(int(np.prod(c.shape, dtype=np.int64)) for c in parameters),
        "inputs": [{"name": n, "shape": _dims(shape), "dtype": dtype} for n, shape, dtype in graph.inputs],
        "outputs": [{"name": n, "shape": _dims(shape), "dtype": dtype} for n, shape, dtype in graph.outputs],
        "rewrites": list(graph.rewrites),
    }


def _dims(shape: tuple) -> list[int]:
    return [int(d) if is_static(d) else -1 for d in shape]  # -1: the batch


def _float_bindings(graph: GraphDef) -> list[tuple[str, WeightBinding]]:
    return [(name, const.binding) for name, const in graph.consts.items() if const.is_parameter]


def _write_exact_group(graph: GraphDef, folder: Path, shard_bytes: int) -> tuple[dict | None, int]:
    exact = [c for c in graph.consts.values() if not c.is_parameter]
    if not exact:
        return None, 0
    stored = {"float32": "<f4", "int32": "<i4", "bool": "u1"}
    arrays = [np.ascontiguousarray(c.array.astype(stored[c.dtype])) for c in exact]
    total = sum(a.nbytes for a in arrays)
    with ShardWriter(folder, max(total, 1), shard_bytes, group=2) as shards:
        for array in arrays:
            shards.write(array.data)
        if total == 0:
            shards.write(b"\0")
    return ({"paths": shards.names, "weights": [{"name": c.name, "shape": list(c.shape), "dtype": c.dtype}
                                                for c in exact]}, max(total, 1))


def write_graph_model(graph: GraphDef, source: Any, out_dir: Path, options: Any, notices: Notices,
                      started: float, inputs: list[InputSpec], progress: Progress | None = None,
                      events: Any = None, dtype_policy: DtypePolicy | None = None) -> Report:
    """Write ``graph`` with its constants as a complete GraphModel folder, atomically; the parameters'
    dtypes are written as ``dtype_policy`` (the fit stage's) says.

    Example:
        >>> report = write_graph_model(trace_graphdef(...), source, Path("out"), ConvertOptions(), Notices(), 0.0, [])  # doctest: +SKIP
    """
    quantization = QuantizeOptions(options.quantize, tuple(options.quantize_weights))
    with staged_output(out_dir, options.force, source.path) as staging:
        bindings = _float_bindings(graph)
        if events is not None:
            progress = events.tensor_progress(len(bindings), planned_bytes(bindings, quantization), progress)
        written = write_weights(bindings, staging, options.weight_shard_size_bytes, quantization, notices,
                                options.allow_nonfinite, progress, dtype_policy) if bindings else None
        groups = [written.manifest_group] if written else []
        exact, exact_bytes = _write_exact_group(graph, staging, options.weight_shard_size_bytes)
        if exact is not None:
            groups.append(exact)
        provenance = {
            "version": __version__,
            "source": {"name": source.name, "format": source.format, "sha256": source.digest(), "step": source.step},
            "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in inputs],
            "topology": "graph-model",
            "quantization": {"dtype": options.quantize, "weights": list(options.quantize_weights) or ["*"]}
            if options.quantize else None,
            "notices": [n.to_json() for n in notices.items],
            "optimize": {"enabled": options.optimize, "rewrites": graph.rewrites},
        }
        document = assemble_graph_model_json(graph, groups, provenance, options.metadata)
        check_graph_model_json(document)
        text = dumps_model_json(document)
        (staging / "model.json").write_text(text, encoding="utf-8")
    counts: dict[str, int] = {}
    for node in graph.nodes:
        counts[node["op"]] = counts.get(node["op"], 0) + 1
    param_count = sum(int(np.prod(c.shape, dtype=np.int64)) for c in graph.consts.values() if c.is_parameter)
    rows = [LayerRow(f"{n} node{'s' * (n != 1)}", op, None,
                     sum(int(np.prod(c.shape, dtype=np.int64)) for c in graph.consts.values() if c.is_parameter)
                     if op == "Const" else 0, "graph") for op, n in sorted(counts.items())]
    shards = [*(written.files if written else []), *(exact["paths"] if exact else [])]
    return Report(
        out_dir=out_dir, source=source.path or Path(source.name), format=source.format, step=source.step,
        inputs=list(inputs), layers=rows, param_count=param_count,
        bytes_written=(written.total_bytes if written else 0) + exact_bytes + len(text.encode("utf-8")),
        shards=shards, quantization=options.quantize, quantized_weights=written.quantized if written else 0,
        notices=list(notices.items), seconds=time.perf_counter() - started, topology="graph-model",
        optimized=options.optimize, rewrites=list(graph.rewrites),
    )


@dataclass(frozen=True)
class FunctionSource:
    """What a GraphModel of a plain JAX function was converted from (for the provenance)."""

    name: str
    path: Path | None = None
    format: str = "jax-function"
    step: int | None = None

    def digest(self) -> None:
        return None
