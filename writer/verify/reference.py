"""The original model in JAX: the checkpoint opened and the layer graph rebuilt with the conversion's
own pipeline (:func:`writer.convert.build_graph`), checked against model.json's topology."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from topology.graph import LayerGraph
from topology.keras_json import model_topology
from topology.trace import is_nnx_module
from topology.vocabulary.errors import ConversionError, Notices
from writer.convert import ConvertOptions, build_graph, hf_folder_source
from writer.fit import fit_inputs
from writer.extras import require_jax
from writer.sources import resolve_source
from writer.term import shape_text
from writer.verify.jax_model import module_function, template_function
from writer.verify.model_files import ModelFiles
from writer.verify.options import VerifyOptions


@dataclass
class Reference:
    """The original model in JAX: ``run(inputs) -> outputs`` and the graph convert builds."""

    kind: str  # "module" | "template"
    description: str
    run: Callable[[list[np.ndarray]], list[np.ndarray]]
    graph: LayerGraph
    same_topology: bool = True  # False: model.json was written from another graph (weights checked by name only)


def build_reference(checkpoint: str | Path, model: ModelFiles, options: VerifyOptions, notices: Notices,
                    opened: list) -> Reference:
    """Open the checkpoint, rebuild the layer graph convert would write, and a JAX function of the original.

    ``opened`` collects what must be closed afterwards.

    Example:
        >>> ref = build_reference("examples/mnist_ckpt", read_model("out"), VerifyOptions(), Notices(), [])  # doctest: +SKIP
        >>> ref.kind                                                                                         # doctest: +SKIP
        'template'
    """
    require_jax("running the original model in JAX (verify, export-savedmodel --checkpoint)")
    given = ConvertOptions(input_shape=options.input_shape).input_shapes() if options.input_shape else None
    written = [tuple(spec.shape) for spec in model.inputs]
    same_for_all = given and len(given) == 1 and all(shape == tuple(given[0]) for shape in written)  # e.g. a HF text model
    if given and [tuple(s) for s in given] != written and not same_for_all:
        raise ConversionError("INPUT_SHAPE_MISMATCH",
                              f"--input-shape {', '.join(shape_text(s) for s in given)} differs from the model's "
                              f"input {', '.join(shape_text(s) for s in written)} in {model.folder / 'model.json'}",
                              "leave --input-shape out: verify reads it from model.json")
    if options.input_dtype is not None:
        wanted = ConvertOptions(input_dtype=options.input_dtype).input_dtypes(len(written))
        if wanted != [spec.dtype for spec in model.inputs]:
            raise ConversionError("INPUT_DTYPE_MISMATCH",
                                  f"--input-dtype {', '.join(wanted)} differs from the model's input dtype "
                                  f"{', '.join(spec.dtype for spec in model.inputs)} in {model.folder / 'model.json'}",
                                  "leave --input-dtype out: verify reads it from model.json")
    module, call, path = options.module, options.call, Path(checkpoint)
    if module is None:  # a Hugging Face folder names its own class
        written_options = ConvertOptions(input_shape=written[0], call=call)  # text inputs share one length
        path, module, hf_options, _ = hf_folder_source(path, written_options)
        call = hf_options.call
    if module is None and model.provenance.get("topology") == "traced":
        raise ConversionError("VERIFY_NEEDS_MODULE",
                              f"{model.folder / 'model.json'} was converted from model code (a traced topology)",
                              "pass the same --module as for the conversion")
    if model.is_graph_model and module is None:
        raise ConversionError("VERIFY_NEEDS_MODULE", f"{model.folder / 'model.json'} is a GraphModel, traced from model code",
                              "pass the same --module as for the conversion")
    source = resolve_source(path, module, None, options.step, Notices(), options.fix)
    opened.append(source)
    if model.is_graph_model:  # its constants are checked by the output comparison, not layer by layer
        graph_options = ConvertOptions(input_shape=written[0] if len(written) == 1 else written,
                                       input_dtype=[spec.dtype for spec in model.inputs], step=options.step,
                                       fix=options.fix, call=call)
        source.call = graph_options.call_spec()
        fit_inputs(source, graph_options, notices)
        name = type(source.module).__name__
        return Reference("module", f"{name} ({'NNX' if is_nnx_module(source.module) else 'Linen'} module) on the "
                                   "checkpoint's parameters", module_function(source.module, source.variables, source.call),
                         LayerGraph([], [], []), same_topology=False)
    convert_options = ConvertOptions(
        input_shape=written[0] if len(written) == 1 else written,
        input_dtype=[spec.dtype for spec in model.inputs] if len(written) > 1 else model.inputs[0].dtype,
        activation=options.activation, pool=options.pool, step=options.step, fix=options.fix, call=call,
        optimize=model.optimized)  # rebuild the graph the conversion wrote: same rewrites, same weights
    graph, _ = build_graph(source, convert_options, notices)  # source.variables are now the fitted ones
    if source.module is None:
        _check_topology(graph, model, options)  # else the template would not be the converted model
        return Reference("template", f"the template model in Flax (nn.Conv, nn.{options.pool}_pool, nn.Dense, "
                                     f"{options.activation}) on the checkpoint's parameters",
                         template_function(graph, options.activation), graph)
    same = True
    try:
        _check_topology(graph, model, options)
    except ConversionError:
        # e.g. converted from the template, verified against the real module: the outputs are
        # what matters; only the weights both name alike are compared byte for byte.
        same = False
        notices.warn("TOPOLOGY_DIFFERS", "model.json's layers differ from the module's traced graph (converted "
                                         "without this --module?); outputs are compared, and the weights both name alike")
    name = type(source.module).__name__
    flavour = "NNX" if is_nnx_module(source.module) else "Linen"
    spec = f" {options.module}" if isinstance(options.module, str) else ""
    return Reference("module", f"{name} ({flavour} module{spec}) on the checkpoint's parameters",
                     module_function(source.module, source.variables, source.call), graph, same)


def _check_topology(graph: LayerGraph, model: ModelFiles, options: VerifyOptions) -> None:
    written = model.layer_classes()
    rebuilt = [(layer.name, layer.class_name) for layer in graph.layers]
    if written != rebuilt:
        first = next((i for i, (a, b) in enumerate(zip(written, rebuilt)) if a != b), min(len(written), len(rebuilt)))
        show = lambda pairs: ", ".join(f"{n} {c}" for n, c in pairs[max(0, first - 1):first + 2]) or "nothing"  # noqa: E731
        how = "--module" if options.module is not None else f"--pool {options.pool} --activation {options.activation}"
        raise ConversionError(
            "VERIFY_TOPOLOGY_MISMATCH",
            f"{model.folder / 'model.json'} has layers {show(written)} where the checkpoint with {how} gives "
            f"{show(rebuilt)} (layer {first + 1})",
            "pass verify the same --module / --pool / --activation / --step as the conversion had",
        )
    mine = json.loads(json.dumps(model_topology(graph)["model_config"]))
    theirs = model.document["modelTopology"].get("model_config", model.document["modelTopology"])
    for a, b in zip(mine["config"]["layers"], theirs["config"]["layers"]):
        if a != b:
            name = a.get("config", {}).get("name", "?")
            keys = sorted(k for k in set(a.get("config", {})) | set(b.get("config", {}))
                          if a.get("config", {}).get(k) != b.get("config", {}).get(k))
            raise ConversionError(
                "VERIFY_TOPOLOGY_MISMATCH",
                f"layer {name} in {model.folder / 'model.json'} differs from what the checkpoint gives "
                f"(config keys: {', '.join(keys) or 'class'})",
                "pass verify the same --module / --pool / --activation as the conversion, or reconvert",
            )

