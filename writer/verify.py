"""The ``verify`` command: run the converted model in real TF.js and the original in JAX, compare.

Inputs are random (seeded) or the ``x`` / ``y`` arrays of an ``.npz`` file. The
original is the checkpoint's own parameters run in JAX:

* with ``--module``: the user's Flax module (Linen ``apply`` or NNX with the
  checkpoint's values), in inference mode;
* without it: the template model that ``convert`` inferred (the Flax MNIST
  example's Conv/pool/Dense stack), built from ``flax.linen`` layers
  (``nn.Conv``, ``nn.avg_pool``, ``nn.Dense``, ``jax.nn`` activations) and fed
  the checkpoint's tensors in Flax layout. It checks the conversion (weights,
  layouts, layer semantics) but cannot know whether the template is the user's
  real architecture: pass ``--module`` for that.

Before running anything, the topology in model.json is compared with the one the
checkpoint and options give (a wrong ``--pool`` or module is a usage error, not
a failed model) and every weight in the shards is compared, byte for byte, with
what the checkpoint says it must be, so a damaged file is named precisely.

Example:
    >>> report = verify("out/", "examples/mnist_ckpt", VerifyOptions(data="mnist_test.npz"))  # doctest: +SKIP
    >>> report.passed, report.accuracy                                                        # doctest: +SKIP
    (True, 0.983)
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from topology.graph import InputSpec, LayerGraph
from topology.vocabulary.errors import ConversionError, Notice, Notices
from writer.term import Style, human_bytes, shape_text, table
from writer.report import render_rewrites

# Relative tolerance by the strongest quantization in the model (None = float32 weights).
DEFAULT_TOLERANCE = {None: 1e-4, "uint16": 1e-2, "float16": 1e-2, "uint8": 5e-2}
_QUANT_RANK = [None, "uint16", "float16", "uint8"]
_ITEMSIZE = {"float32": 4, "float16": 2, "uint16": 2, "uint8": 1, "int32": 4}


class VerificationFailed(ConversionError):
    """The converted model could not even be run in TF.js: a failed verification (exit status 1).

    Example:
        >>> VerificationFailed("TFJS_FAILED", "out/model.json: ...", "reconvert").exit_status
        1
    """

    exit_status = 1


@dataclass(frozen=True)
class VerifyOptions:
    """Options of :func:`verify` (the CLI flags, by the same names).

    ``tolerance`` is relative: the check passes when ``max_abs_error <=
    tolerance * max(1, max|reference|)``. ``None`` picks it from the model's
    quantization (1e-4 for float32 weights, 1e-2 float16/uint16, 5e-2 uint8).

    Example:
        >>> VerifyOptions(samples=8).backend
        'wasm'
    """

    module: Any = None
    input_shape: Any = None  # checked against model.json when given
    activation: str = "relu"
    pool: str = "avg"
    step: int | None = None
    data: str | Path | None = None
    samples: int | None = None  # random inputs: how many (default 64); data: the first N
    seed: int = 0
    backend: str = "wasm"  # tfjs's fast CPU backend; "cpu" is the plain-JS one
    tolerance: float | None = None
    repeat: int = 20  # batch-1 predictions timed for the latency
    batch_size: int = 256
    timeout: float = 600.0
    fix: bool = True  # the conversion's automatic fixes, as convert --no-fix turns them off


@dataclass
class WeightMismatch:
    """A weight whose bytes in the shards differ from what the checkpoint gives."""

    name: str
    problem: str  # "differs" | "missing" | "unexpected" | "shape" | "truncated"
    differing: int = 0
    size: int = 0
    max_abs_diff: float | None = None

    def render(self) -> str:
        if self.problem == "differs":
            diff = "" if self.max_abs_diff is None else f" (max |diff| {_num(self.max_abs_diff)})"
            return f"{self.name}: {self.differing:,} of {self.size:,} values differ from the checkpoint{diff}"
        return f"{self.name}: {self.problem}"

    def to_json(self) -> dict:
        return {"name": self.name, "problem": self.problem, "differing": self.differing, "size": self.size,
                "max_abs_diff": _finite_or_none(self.max_abs_diff)}


@dataclass
class VerifyReport:
    """The outcome of one verification; :meth:`render` for people, :meth:`to_json` for scripts."""

    model_dir: Path
    checkpoint: Path
    reference: str  # "module" | "template"
    reference_description: str
    backend: str
    input_source: str  # "random" | "data"
    data_path: Path | None
    seed: int | None
    samples: int
    input_shapes: list[list]
    output_shapes: list[list]
    max_abs_error: float
    mse: float
    scale: float
    tolerance: float
    top1_agreement: float | None
    accuracy: float | None
    reference_accuracy: float | None
    load_ms: float
    predict_ms: float
    predict_runs: int
    batch_predict_ms: float
    model_bytes: int
    weights_checked: int
    weight_mismatches: list[WeightMismatch]
    nonfinite_outputs: int
    worst: dict | None
    tfjs_version: str
    seconds: float = 0.0
    notices: list[Notice] = field(default_factory=list)
    batch_size: int = 256  # samples per TF.js / JAX call
    optimized: bool = False  # model.json says --optimize rewrote the graph
    rewrites: list[dict] = field(default_factory=list)  # the rewrites it lists

    @property
    def failures(self) -> list[str]:
        """Why the verification failed (empty when it passed)."""
        reasons = []
        if self.nonfinite_outputs:
            reasons.append(f"TF.js produced {self.nonfinite_outputs:,} NaN/Inf output values")
        if not self.max_abs_error <= self.tolerance * self.scale:
            reasons.append(f"max abs error {_num(self.max_abs_error)} exceeds the tolerance "
                           f"{_num(self.tolerance * self.scale)} ({self.tolerance:g} x scale {_num(self.scale)})")
        if self.weight_mismatches:
            reasons.append(f"{len(self.weight_mismatches)} weight(s) in the shards differ from the checkpoint")
        return reasons

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict:
        return {
            "passed": self.passed, "failures": self.failures,
            "model_dir": str(self.model_dir), "checkpoint": str(self.checkpoint),
            "reference": self.reference, "reference_description": self.reference_description,
            "backend": self.backend, "tfjs_version": self.tfjs_version,
            "inputs": {"source": self.input_source, "path": None if self.data_path is None else str(self.data_path),
                       "seed": self.seed, "samples": self.samples, "shapes": self.input_shapes},
            "output_shapes": self.output_shapes,
            "max_abs_error": _finite_or_none(self.max_abs_error), "mse": _finite_or_none(self.mse),
            "scale": self.scale, "tolerance": self.tolerance,
            "top1_agreement": self.top1_agreement, "accuracy": self.accuracy,
            "reference_accuracy": self.reference_accuracy,
            "nonfinite_outputs": self.nonfinite_outputs, "worst": self.worst,
            "load_ms": round(self.load_ms, 3), "predict_ms": round(self.predict_ms, 3),
            "predict_runs": self.predict_runs, "batch_predict_ms": round(self.batch_predict_ms, 3),
            "batch_size": self.batch_size,
            "model_bytes": self.model_bytes,
            "weights": {"checked": self.weights_checked, "mismatches": [m.to_json() for m in self.weight_mismatches]},
            "notices": [n.to_json() for n in self.notices], "seconds": round(self.seconds, 3),
            "optimize": {"enabled": self.optimized, "rewrites": self.rewrites},
        }

    def render(self, style: Style | None = None) -> str:
        """A concise aligned report ending in PASS or FAIL."""
        s = style or Style(enabled=False)
        where = (f"{self.samples:,} samples from {self.data_path}" if self.input_source == "data"
                 else f"{self.samples:,} random samples (seed {self.seed})")
        lines = [f"{s.bold('verify')} {self.model_dir} against {self.checkpoint}",
                 f"  reference: {self.reference_description}",
                 f"  TF.js {self.tfjs_version} ({self.backend} backend, Node) on {where}, "
                 f"input {', '.join(shape_text(sh) for sh in self.input_shapes)}"]
        tol = self.tolerance * self.scale
        ok = self.max_abs_error <= tol and not self.nonfinite_outputs
        rows = [("metric", "value", "")]
        rows.append(("max abs error", _num(self.max_abs_error),
                     f"{'<=' if ok else '>'} {_num(tol)} tolerance ({self.tolerance:g} x {_num(self.scale)})"))
        rows.append(("mean squared error", _num(self.mse), ""))
        if self.top1_agreement is not None:
            rows.append(("top-1 agreement", f"{self.top1_agreement:.2%}", "TF.js arg-max == JAX arg-max"))
        if self.accuracy is not None:
            ref = f"JAX {self.reference_accuracy:.2%}" if self.reference_accuracy is not None else ""
            rows.append(("accuracy (TF.js)", f"{self.accuracy:.2%}", ref))
        if self.weights_checked:
            rows.append(("weights checked", f"{self.weights_checked - len(self.weight_mismatches)}/{self.weights_checked}",
                         ("byte-identical to the checkpoint" + (" (folded ones: as --optimize computes them)"
                                                                if self.optimized else ""))
                         if not self.weight_mismatches else "MISMATCH"))
        rows.append(("TF.js load", f"{self.load_ms:.1f} ms", "read model.json + shards, build the model"))
        rows.append(("predict latency", f"{self.predict_ms:.2f} ms", f"median of {self.predict_runs} batch-1 runs"))
        rows.append(("batch predict", f"{self.batch_predict_ms:.1f} ms",
                     f"{min(self.samples, self.batch_size):,} samples per call"))
        rows.append(("model size", human_bytes(self.model_bytes), "model.json + shards"))
        lines.append(table(rows, right={1}, indent="  "))
        for mismatch in self.weight_mismatches[:10]:
            lines.append("  " + s.red("weight ") + mismatch.render())
        if len(self.weight_mismatches) > 10:
            lines.append(f"  ... {len(self.weight_mismatches) - 10} more weights differ")
        if self.worst is not None and not self.passed:
            lines.append(f"  worst difference: sample {self.worst['sample']}, output {self.worst['output']} "
                         f"{self.worst['index']}: TF.js {_num(self.worst['tfjs'])} vs JAX {_num(self.worst['jax'])}")
        if self.optimized:
            lines.append(f"  optimized graph: {len(self.rewrites)} rewrite(s), rebuilt the same way for the "
                         "weight check; JAX runs the original model")
            lines += render_rewrites(self.rewrites, indent="    ")
        assumed = [n.code for n in self.notices if n.kind == "assumption"]
        for notice in self.notices:
            if notice.kind != "assumption":
                lines.append("  " + (s.yellow(notice.render()) if notice.kind == "warning" else notice.render()))
        if assumed:
            lines.append(f"  the reference makes the conversion's assumptions: {', '.join(assumed)} "
                         "(listed by inspect)")
        if self.passed:
            lines.append(s.green("PASS") + f" in {self.seconds:.1f} s")
        else:
            lines.append(s.red("FAIL") + ": " + "; ".join(self.failures))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The model folder


@dataclass
class ModelFiles:
    """A converted model folder: model.json, its inputs and its weight manifest.

    Example:
        >>> files = read_model("out/")          # doctest: +SKIP
        >>> files.inputs[0].shape               # doctest: +SKIP
        (28, 28, 1)
    """

    folder: Path
    document: dict
    inputs: list[InputSpec]
    weights: list[dict]  # manifest entries in stream order
    paths: list[Path]  # shard files in stream order
    bytes: int

    @property
    def provenance(self) -> dict:
        meta = self.document.get("userDefinedMetadata")
        return meta.get("flax2tfjs", {}) if isinstance(meta, dict) else {}

    @property
    def optimized(self) -> bool:
        """Whether the conversion applied --optimize (older models, without the record: no)."""
        record = self.provenance.get("optimize")
        return bool(record.get("enabled")) if isinstance(record, dict) else False

    @property
    def rewrites(self) -> list[dict]:
        record = self.provenance.get("optimize")
        rewrites = record.get("rewrites") if isinstance(record, dict) else None
        return [r for r in rewrites if isinstance(r, dict)] if isinstance(rewrites, list) else []

    @property
    def quantization(self) -> str | None:
        found = {w.get("quantization", {}).get("dtype") for w in self.weights if isinstance(w.get("quantization"), dict)}
        return max(found, key=_QUANT_RANK.index, default=None) if found <= set(_QUANT_RANK) else "uint8"

    def layer_classes(self) -> list[tuple[str, str]]:
        config = self.document["modelTopology"].get("model_config", self.document["modelTopology"])
        return [(layer.get("config", {}).get("name", layer.get("name", "")), layer.get("class_name", ""))
                for layer in config.get("config", {}).get("layers", []) if layer.get("class_name") != "InputLayer"]


def read_model(folder: str | Path) -> ModelFiles:
    """Read and sanity-check a converted model folder (or the path of its model.json).

    Example:
        >>> read_model("/nonexistent")          # doctest: +ELLIPSIS
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: MODEL_NOT_FOUND: ...
    """
    folder = Path(folder)
    if folder.is_file() and folder.suffix == ".json":
        folder = folder.parent
    path = folder / "model.json"
    if not path.is_file():
        raise ConversionError("MODEL_NOT_FOUND", f"{folder} has no model.json",
                              "give the output folder of a conversion: python -m writer CKPT OUT, then verify OUT CKPT")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        topology = document["modelTopology"]
        config = topology.get("model_config", topology)
        inputs = _scalar_inputs(_input_specs(config), document)
        manifest = document["weightsManifest"]
        weights = [w for group in manifest for w in group["weights"]]
        paths = [folder / p for group in manifest for p in group["paths"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConversionError("MODEL_INVALID", f"{path} is not a LayersModel model.json ({type(exc).__name__}: {exc})",
                              "reconvert the checkpoint into a fresh folder") from None
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise VerificationFailed("MODEL_INVALID", f"{path} lists weight files that do not exist: {', '.join(missing)}",
                                 "copy the whole output folder, or reconvert")
    size = path.stat().st_size + sum(p.stat().st_size for p in paths)
    return ModelFiles(folder, document, inputs, weights, paths, size)


def _scalar_inputs(specs: list[InputSpec], document: dict) -> list[InputSpec]:
    """Per-example scalar inputs are declared (batch, 1) in model.json; the provenance keeps shape ()."""
    recorded = ((document.get("userDefinedMetadata") or {}).get("flax2tfjs") or {}).get("inputs") or []
    scalars = {i.get("name") for i in recorded if isinstance(i, dict) and i.get("shape") == []}
    return [InputSpec(s.name, (), s.dtype) if s.name in scalars and s.shape == (1,) else s for s in specs]


def _input_specs(config: dict) -> list[InputSpec]:
    layers = config["config"]["layers"]
    if config["class_name"] == "Sequential":
        first = layers[0]["config"]
        shape = first.get("batch_input_shape") or [None, *first["input_shape"]]
        return [InputSpec(first.get("name", "input"), tuple(shape[1:]), first.get("dtype", "float32"))]
    by_name = {layer["name"]: layer for layer in layers}
    specs = []
    for name, *_ in config["config"]["input_layers"]:
        cfg = by_name[name]["config"]
        specs.append(InputSpec(name, tuple(cfg["batch_input_shape"][1:]), cfg.get("dtype", "float32")))
    return specs


# ---------------------------------------------------------------------------------------------
# Inputs


def load_data(path: str | Path, inputs: list[InputSpec], limit: int | None, notices: Notices
              ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """``x`` (or ``x0``, ``x1``, ... for several inputs) and optional ``y`` labels from an .npz.

    Arrays whose per-sample size matches the model input are reshaped (e.g. (n, 28, 28) for
    (28, 28, 1)); one-hot ``y`` becomes class indices.

    Example:
        >>> xs, y = load_data("mnist_test.npz", [InputSpec("input", (28, 28, 1))], None, Notices())  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError("DATA_NOT_FOUND", f"no data file at {path}",
                              "give an .npz with arrays x (inputs) and optionally y (labels)")
    try:
        archive = np.load(path, allow_pickle=False)
        keys = set(archive.files)
    except (OSError, ValueError) as exc:
        raise ConversionError("DATA_INVALID", f"{path} is not an .npz archive ({exc})",
                              "write it with numpy.savez(path, x=inputs, y=labels)") from None
    with archive:
        wanted = ["x"] if len(inputs) == 1 and "x" in keys else [f"x{i}" for i in range(len(inputs))]
        absent = [k for k in wanted if k not in keys]
        if absent:
            raise ConversionError("DATA_INVALID", f"{path} has arrays {sorted(keys)} but no {', '.join(absent)}",
                                  "store the inputs as x (or x0, x1, ... for a model with several inputs)")
        try:
            xs = [archive[k] for k in wanted]
            y = archive["y"] if "y" in keys else None
        except ValueError as exc:  # object arrays would need pickle
            raise ConversionError("DATA_INVALID", f"{path}: {exc}", "store plain numeric arrays") from None
    count = len(xs[0])
    for key, x, spec in zip(wanted, xs, inputs):
        if x.ndim == 0 or len(x) != count:
            raise ConversionError("DATA_INVALID", f"{path}: {key} has shape {x.shape}; every x needs the same "
                                  f"number of samples ({count})", "put samples on the first axis")
        if x.dtype.kind not in "fiub":
            raise ConversionError("DATA_INVALID", f"{path}: {key} has dtype {x.dtype}", "store numbers")
    fixed = []
    for key, x, spec in zip(wanted, xs, inputs):
        if tuple(x.shape[1:]) != tuple(spec.shape):
            if int(np.prod(x.shape[1:])) != int(np.prod(spec.shape)):
                raise ConversionError(
                    "DATA_SHAPE_MISMATCH", f"{path}: {key} holds samples of shape {shape_text(x.shape[1:])} "
                    f"but the model input {spec.name} is {shape_text(spec.shape)}",
                    "store x as (samples, *input shape)")
            notices.fixed("DATA_RESHAPED", f"{key} {shape_text(x.shape)} was reshaped to "
                                           f"{shape_text((len(x), *spec.shape))} to fit the model input")
            x = x.reshape((len(x), *spec.shape))
        fixed.append(x.astype(np.float32 if spec.dtype == "float32" else np.int32))
    if y is not None:
        if len(y) != count:
            raise ConversionError("DATA_INVALID", f"{path}: y has {len(y)} labels for {count} samples",
                                  "give one label per sample")
        if y.ndim == 2 and y.shape[1] > 1:
            y = np.argmax(y, axis=1)  # one-hot
        y = y.reshape(count)
        if y.dtype.kind not in "iub" and not np.all(np.equal(np.mod(y, 1), 0)):
            raise ConversionError("DATA_INVALID", f"{path}: y holds non-integer labels",
                                  "store class indices (or one-hot rows)")
        y = y.astype(np.int64)
    if limit is not None:
        fixed = [x[:limit] for x in fixed]
        y = None if y is None else y[:limit]
    if not len(fixed[0]):
        raise ConversionError("DATA_INVALID", f"{path}: no samples", "store at least one sample")
    return fixed, y


def random_inputs(inputs: list[InputSpec], count: int, seed: int, document: dict) -> list[np.ndarray]:
    """Seeded inputs: floats uniform in [-1, 1), token ids within the smallest Embedding's vocabulary.

    Example:
        >>> random_inputs([InputSpec("input", (3,))], 2, 0, {})[0].shape
        (2, 3)
    """
    rng = np.random.default_rng(seed)
    vocab = _smallest_vocabulary(document)
    out = []
    for spec in inputs:
        if spec.dtype == "int32":
            out.append(rng.integers(0, vocab, (count, *spec.shape), dtype=np.int32))
        else:
            out.append(rng.uniform(-1.0, 1.0, (count, *spec.shape)).astype(np.float32))
    return out


def _smallest_vocabulary(document: dict) -> int:
    sizes = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == "Embedding" and isinstance(node.get("config"), dict):
                sizes.append(int(node["config"].get("input_dim", 2)))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document.get("modelTopology", {}))
    return max(1, min(sizes)) if sizes else 2


# ---------------------------------------------------------------------------------------------
# The reference in JAX


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
    from writer.convert import ConvertOptions
    from writer.extras import require_jax
    from writer.inspect_tree import plan_graph
    from writer.sources import resolve_source

    require_jax("running the original model in JAX (verify, export-savedmodel --checkpoint)")
    given = ConvertOptions(input_shape=options.input_shape).input_shapes() if options.input_shape else None
    written = [tuple(spec.shape) for spec in model.inputs]
    if given and [tuple(s) for s in given] != written:
        raise ConversionError("INPUT_SHAPE_MISMATCH",
                              f"--input-shape {', '.join(shape_text(s) for s in given)} differs from the model's "
                              f"input {', '.join(shape_text(s) for s in written)} in {model.folder / 'model.json'}",
                              "leave --input-shape out: verify reads it from model.json")
    if options.module is None and model.provenance.get("topology") == "traced":
        raise ConversionError("VERIFY_NEEDS_MODULE",
                              f"{model.folder / 'model.json'} was converted from model code (a traced topology)",
                              "pass the same --module as for the conversion")
    import inspect as pyinspect

    takes_fix = "fix" in pyinspect.signature(resolve_source).parameters
    source = resolve_source(Path(checkpoint), options.module, None, options.step, Notices(),
                            **({"fix": options.fix} if takes_fix else {}))
    opened.append(source)
    fields = dict(input_shape=written[0] if len(written) == 1 else written,
                  input_dtype=[spec.dtype for spec in model.inputs] if len(written) > 1 else model.inputs[0].dtype,
                  activation=options.activation, pool=options.pool, step=options.step)
    if "fix" in ConvertOptions.__dataclass_fields__:
        fields["fix"] = options.fix
    fields["optimize"] = model.optimized  # rebuild the graph the conversion wrote: same rewrites, same weights
    convert_options = ConvertOptions(**fields)
    graph, kind = plan_graph(source, convert_options, notices)  # source.variables are now the fitted ones
    if source.module is None:
        _check_topology(graph, model, options)  # else the template would not be the converted model
        return Reference("template", f"the template model in Flax (nn.Conv, nn.{options.pool}_pool, nn.Dense, "
                                     f"{options.activation}) on the checkpoint's parameters",
                         _template_function(graph, options.activation), graph)
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
    flavour = "NNX" if _is_nnx(source.module) else "Linen"
    spec = f" {options.module}" if isinstance(options.module, str) else ""
    return Reference("module", f"{name} ({flavour} module{spec}) on the checkpoint's parameters",
                     _module_function(source.module, source.variables), graph, same)


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
    from topology.keras_json import model_topology

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


def _float32(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array.astype(np.float32) if array.dtype.kind == "f" or array.dtype.name == "bfloat16" else array


_FLAX_ACTIVATIONS = {"softsign": "soft_sign", "swish": "silu"}


def _jax_activation(name: str) -> Callable:
    import functools

    import jax
    import jax.numpy as jnp

    if name == "linear":
        return lambda x: x
    if name == "gelu_exact":
        return functools.partial(jax.nn.gelu, approximate=False)
    if name == "tanh":
        return jnp.tanh
    return getattr(jax.nn, _FLAX_ACTIVATIONS.get(name, name))


def _template_function(graph: LayerGraph, activation: str) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """The template graph evaluated with flax.linen layers on the raw checkpoint tensors."""
    import flax.linen as nn
    import jax

    act = _jax_activation(activation)
    params: list[dict] = []
    steps: list[Callable] = []
    for layer in graph.layers:
        cls, cfg = layer.class_name, layer.config
        weights = {}
        for binding in layer.weights:
            if binding.tensor is None or binding.transform is not None:
                raise ConversionError("VERIFY_NEEDS_MODULE", f"layer {layer.name} is not a plain template layer",
                                      "pass --module so the reference runs your model code")
            weights[binding.name] = _float32(binding.tensor.load())  # Flax layout, as stored
        params.append(weights)
        fn = _activated(cfg.get("activation", "linear"), act)
        if cls in ("Conv1D", "Conv2D", "Conv3D"):
            module = nn.Conv(features=cfg["filters"], kernel_size=tuple(cfg["kernel_size"]),
                             strides=tuple(cfg["strides"]), padding=str(cfg["padding"]).upper(),
                             kernel_dilation=tuple(cfg["dilation_rate"]), use_bias=cfg["use_bias"])
            steps.append(_apply(module, fn))
        elif cls == "Dense":
            steps.append(_apply(nn.Dense(features=cfg["units"], use_bias=cfg["use_bias"]), fn))
        elif cls.startswith(("AveragePooling", "MaxPooling")):
            pool = nn.avg_pool if cls.startswith("Average") else nn.max_pool
            window, strides, padding = tuple(cfg["pool_size"]), tuple(cfg["strides"]), str(cfg["padding"]).upper()
            steps.append(lambda p, x, pool=pool, w=window, st=strides, pad=padding: pool(x, w, strides=st, padding=pad))
        elif cls == "Flatten":
            steps.append(lambda p, x: x.reshape((x.shape[0], -1)))
        else:
            raise ConversionError("VERIFY_NEEDS_MODULE", f"layer {layer.name} ({cls}) is not a template layer",
                                  "pass --module so the reference runs your model code")

    @jax.jit
    def forward(all_params, x):
        for step, p in zip(steps, all_params):
            x = step(p, x)
        return x

    return lambda xs: [np.asarray(forward(params, xs[0]))]


def _activated(name: str, act: Callable) -> Callable:
    return (lambda x: x) if name == "linear" else act


def _apply(module: Any, activation: Callable) -> Callable:
    return lambda p, x: activation(module.apply({"params": p}, x))


def _module_function(module: Any, variables: Any) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    import jax

    from topology.trace.capture import inference_kwargs

    if _is_nnx(module):
        from flax import nnx

        _load_nnx_state(module, variables)
        module.eval()
        graphdef, state = nnx.split(module)
        flags = inference_kwargs(type(module).__call__)

        @jax.jit
        def forward(state, *xs):
            return nnx.merge(graphdef, state)(*xs, **flags)

        return lambda xs: _as_list(forward(state, *xs))
    tree = {name: _nest({p: _float32(ref.load()) for p, ref in refs.items()})
            for name, refs in variables.collections.items() if refs}
    flags = inference_kwargs(type(module).__call__)
    forward = jax.jit(lambda v, *xs: module.apply(v, *xs, **flags))
    return lambda xs: _as_list(forward(tree, *xs))


def _load_nnx_state(module: Any, variables: Any) -> None:
    """Set every NNX Param/BatchStat of ``module`` from the checkpoint, matched by path."""
    from flax import nnx

    graphdef, state = nnx.split(module)
    flat = nnx.to_flat_state(state)
    tensors = {path: ref for refs in variables.collections.values() for path, ref in refs.items()}
    updated = []
    for path, var in flat:
        key = tuple(str(p) for p in path)
        ref = tensors.get(key) or tensors.get((*key, "value"))
        if ref is None:
            if isinstance(var, (nnx.Param, nnx.BatchStat)) or getattr(var, "type", None) in (nnx.Param, nnx.BatchStat):
                raise ConversionError("MISSING_PARAMETER",
                                      f"the module needs {'/'.join(key)}, which the checkpoint does not have",
                                      "check that the checkpoint was saved from this model (nnx.state(model))")
            updated.append((path, var))
            continue
        var = var.replace(_float32(ref.load())) if hasattr(var, "replace") else var
        updated.append((path, var))
    nnx.update(module, nnx.from_flat_state(updated))


def _is_nnx(obj: Any) -> bool:
    from topology.trace import is_nnx_module

    return is_nnx_module(obj)


def _nest(flat: dict) -> dict:
    from topology.trace.capture import _nest as nest  # one tree builder for tracing and verify

    return nest(flat)


def _as_list(out: Any) -> list[np.ndarray]:
    if isinstance(out, (list, tuple)):
        return [np.asarray(o) for o in out]
    if isinstance(out, dict):
        return [np.asarray(out[k]) for k in out]
    return [np.asarray(out)]


# ---------------------------------------------------------------------------------------------
# The weight check


def check_weights(graph: LayerGraph, model: ModelFiles, strict: bool = True) -> tuple[int, list[WeightMismatch]]:
    """Compare every weight's bytes in the shards with what the checkpoint gives (one tensor at a time).

    Returns (weights checked, mismatches). ``strict=False`` compares only the
    weights both sides name (when model.json's topology is not ``graph``'s).

    Example:
        >>> checked, bad = check_weights(graph, read_model("out"))   # doctest: +SKIP
        >>> checked, bad                                             # doctest: +SKIP
        (8, [])
    """
    from writer.quantize import quantize
    from writer.weights import to_float32

    expected = dict(graph.weight_bindings())
    mismatches: list[WeightMismatch] = []
    stream = _ShardStream(model.paths)
    offset, checked = 0, 0
    try:
        for spec in model.weights:
            name, shape = spec.get("name", "?"), tuple(spec.get("shape", ()))
            quant = spec.get("quantization") if isinstance(spec.get("quantization"), dict) else None
            dtype = quant["dtype"] if quant else spec.get("dtype", "float32")
            size = int(np.prod(shape, dtype=np.int64))
            nbytes = size * _ITEMSIZE.get(dtype, 4)
            stored = stream.read(offset, nbytes)
            offset += nbytes
            binding = expected.pop(name, None)
            if binding is None and not strict:
                continue
            checked += 1
            if binding is None:
                mismatches.append(WeightMismatch(name, "unexpected (the checkpoint has no such weight)"))
                continue
            if tuple(binding.shape) != shape:
                mismatches.append(WeightMismatch(name, f"shape {list(shape)} in the manifest, "
                                                       f"{list(binding.shape)} from the checkpoint"))
                continue
            if len(stored) < nbytes:
                mismatches.append(WeightMismatch(name, f"truncated: {len(stored)} of {nbytes} bytes in the shards"))
                continue
            values = to_float32(binding.materialize(), binding.origin, set(), Notices(), True)
            want = quantize(values, dtype)[0] if quant else values
            want_bytes = np.ascontiguousarray(want).tobytes()
            if want_bytes != stored:
                got = np.frombuffer(stored, dtype=np.dtype(want.dtype).newbyteorder("<")).reshape(want.shape)
                with np.errstate(all="ignore"):
                    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                finite = diff[np.isfinite(diff)]
                worst = float("inf") if finite.size < diff.size else float(finite.max()) if finite.size else 0.0
                mismatches.append(WeightMismatch(name, "differs", _count_differing(got, want), size, worst))
            del values, want
    finally:
        stream.close()
    for name in expected if strict else ():
        mismatches.append(WeightMismatch(name, "missing from the manifest"))
    return checked, mismatches


def _count_differing(got: np.ndarray, want: np.ndarray) -> int:
    a = np.ascontiguousarray(got).view(np.uint8).reshape(got.size, -1)
    b = np.ascontiguousarray(want).view(np.uint8).reshape(want.size, -1)
    return int(np.count_nonzero((a != b).any(axis=1)))


class _ShardStream:
    """Reads byte ranges of the concatenated shard files (weights may span files)."""

    def __init__(self, paths: list[Path]) -> None:
        self.files = []
        self.starts = []
        start = 0
        for path in paths:
            handle = open(path, "rb")
            size = path.stat().st_size
            self.files.append((handle, size))
            self.starts.append(start)
            start += size

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        for (handle, size), start in zip(self.files, self.starts):
            if length <= 0:
                break
            if offset >= start + size or offset + length <= start:
                continue
            inner = max(0, offset - start)
            take = min(size - inner, offset + length - (start + inner))
            handle.seek(inner)
            out += handle.read(take)
        return bytes(out)

    def close(self) -> None:
        for handle, _ in self.files:
            handle.close()


# ---------------------------------------------------------------------------------------------
# The whole verification


def verify(model_dir: str | Path, checkpoint: str | Path, options: VerifyOptions = VerifyOptions(), *,
           runner: Any = None, progress: bool | None = None) -> VerifyReport:
    """Run ``model_dir`` in real TF.js and the checkpoint's model in JAX on the same inputs; compare.

    ``runner`` is an open :class:`writer.tfjs_node.TfjsRunner` to reuse (one is
    started otherwise). ``progress`` shows bars on stderr (default: when it is a
    terminal).

    Example:
        >>> r = verify("out", "examples/mnist_ckpt", VerifyOptions(samples=16))   # doctest: +SKIP
        >>> r.passed, r.max_abs_error < 1e-4                                      # doctest: +SKIP
        (True, True)
    """
    from writer.progress import ProgressBar
    from writer.tfjs_node import TfjsError, TfjsRunner

    started = time.perf_counter()
    _check_options(options)
    model = read_model(model_dir)
    notices = Notices()
    opened: list = []
    own_runner = runner is None
    try:
        reference = build_reference(checkpoint, model, options, notices, opened)
        checked, mismatches = check_weights(reference.graph, model, strict=reference.same_topology)
        if options.data is not None:
            xs, labels = load_data(options.data, model.inputs, options.samples, notices)
        else:
            xs, labels = random_inputs(model.inputs, options.samples or 64, options.seed, model.document), None
        count = len(xs[0])
        batch = max(1, options.batch_size)
        enabled = None if progress is None else progress
        ref_out: list[list[np.ndarray]] = []
        with ProgressBar("JAX reference", total=count, unit="samples", enabled=enabled) as bar:
            for start in range(0, count, batch):
                ref_out.append(reference.run([x[start:start + batch] for x in xs]))
                bar.advance(min(batch, count - start))
        if own_runner:
            runner = TfjsRunner(timeout=options.timeout)
        tfjs_out: list[list[np.ndarray]] = []
        load_ms, batch_ms = None, []
        model_json = model.folder / "model.json"
        try:
            with ProgressBar(f"TF.js {options.backend}", total=count, unit="samples", enabled=enabled) as bar:
                for start in range(0, count, batch):
                    result = runner.predict(model.folder, [x[start:start + batch] for x in xs], backend=options.backend)
                    tfjs_out.append(result.outputs)
                    load_ms = result.load_ms if load_ms is None else load_ms
                    batch_ms.extend(result.predict_ms)
                    bar.advance(min(batch, count - start))
            timing = runner.predict(model.folder, [x[:1] for x in xs], backend=options.backend,
                                    repeat=max(1, options.repeat))
            version = runner.version()
        except TfjsError as exc:
            raise VerificationFailed("TFJS_FAILED", f"TF.js could not load or run {model_json}: {exc.message}",
                                     "reconvert into a fresh folder; if it persists, report it with the model.json") from None
        outputs_tfjs = [np.concatenate([part[i] for part in tfjs_out]) for i in range(len(tfjs_out[0]))]
        outputs_ref = [np.concatenate([part[i] for part in ref_out]) for i in range(len(ref_out[0]))]
        metrics = compare(outputs_tfjs, outputs_ref, labels)
        tolerance = options.tolerance if options.tolerance is not None else DEFAULT_TOLERANCE[model.quantization]
        report = VerifyReport(
            model_dir=model.folder, checkpoint=Path(checkpoint), reference=reference.kind,
            reference_description=reference.description, backend=options.backend,
            input_source="data" if options.data is not None else "random",
            data_path=Path(options.data) if options.data is not None else None,
            seed=None if options.data is not None else options.seed, samples=count,
            input_shapes=[list(x.shape[1:]) for x in xs],
            output_shapes=[list(o.shape[1:]) for o in outputs_tfjs],
            tolerance=tolerance, load_ms=float(load_ms or 0.0),
            predict_ms=float(statistics.median(timing.predict_ms)), predict_runs=len(timing.predict_ms),
            batch_predict_ms=float(statistics.median(batch_ms)) if batch_ms else 0.0,
            model_bytes=model.bytes, weights_checked=checked, weight_mismatches=mismatches,
            tfjs_version=version, notices=list(notices.items), batch_size=batch,
            optimized=model.optimized, rewrites=model.rewrites, **metrics)
        report.seconds = time.perf_counter() - started
        return report
    finally:
        for source in opened:
            source.close()
        if own_runner and runner is not None:
            runner.close()


def _check_options(options: VerifyOptions) -> None:
    if options.backend not in ("cpu", "wasm"):
        raise ConversionError("BAD_OPTION", f"--backend {options.backend}", "choose cpu or wasm")
    if options.tolerance is not None and not options.tolerance >= 0:
        raise ConversionError("BAD_OPTION", f"--tolerance {options.tolerance}", "give a non-negative number, e.g. 1e-4")
    if options.samples is not None and options.samples < 1:
        raise ConversionError("BAD_OPTION", f"--samples {options.samples}", "give a positive number of samples")
    if options.repeat < 1 or options.batch_size < 1:
        raise ConversionError("BAD_OPTION", "--repeat and --batch-size must be positive", "e.g. --repeat 20")


def compare(tfjs: Sequence[np.ndarray], reference: Sequence[np.ndarray], labels: np.ndarray | None) -> dict:
    """Error metrics between TF.js and JAX outputs (and accuracy against ``labels``).

    Example:
        >>> m = compare([np.array([[0.0, 2.0]])], [np.array([[0.0, 1.5]])], np.array([1]))
        >>> m["max_abs_error"], m["top1_agreement"], m["accuracy"]
        (0.5, 1.0, 1.0)
    """
    if len(tfjs) != len(reference) or any(a.shape != b.shape for a, b in zip(tfjs, reference)):
        raise VerificationFailed(
            "VERIFY_OUTPUT_MISMATCH",
            f"TF.js outputs {[shape_text(a.shape) for a in tfjs]} but JAX outputs {[shape_text(b.shape) for b in reference]}",
            "the model.json does not belong to this checkpoint/module; reconvert")
    nonfinite = int(sum(a.size - np.count_nonzero(np.isfinite(a)) for a in tfjs))
    with np.errstate(all="ignore"):
        diffs = [np.abs(a.astype(np.float64) - b.astype(np.float64)) for a, b in zip(tfjs, reference)]
    max_abs = max((float(np.max(d)) if d.size else 0.0) for d in diffs)
    if nonfinite or not np.isfinite(max_abs):
        max_abs = float("inf")
    total = sum(d.size for d in diffs)
    with np.errstate(all="ignore"):
        mse = float(sum(float(np.sum(d * d)) for d in diffs) / max(1, total))
    scale = max(1.0, max((float(np.max(np.abs(b))) if b.size else 0.0) for b in reference))
    worst = None
    for index, d in enumerate(diffs):
        if d.size:
            flat = int(np.nanargmax(np.where(np.isnan(d), np.inf, d)))
            where = np.unravel_index(flat, d.shape)
            value = float(np.where(np.isnan(d), np.inf, d)[where])
            if worst is None or value > worst["diff"]:
                worst = {"sample": int(where[0]), "output": index, "index": [int(i) for i in where[1:]],
                         "tfjs": _finite_or_none(float(tfjs[index][where])), "jax": float(reference[index][where]),
                         "diff": value}
    if worst is not None:
        worst["diff"] = _finite_or_none(worst["diff"])
    first_t, first_r = tfjs[0], reference[0]
    classifier = first_r.ndim >= 2 and first_r.shape[-1] > 1  # class scores on the last axis
    top1 = accuracy = ref_accuracy = None
    if classifier and first_r.size:
        pred_t = np.argmax(np.nan_to_num(first_t, nan=-np.inf), -1)  # every position (sequences too)
        pred_r = np.argmax(first_r, -1)
        top1 = float(np.mean(pred_t == pred_r))
        if labels is not None and pred_r.shape == labels.shape:
            accuracy = float(np.mean(pred_t == labels))
            ref_accuracy = float(np.mean(pred_r == labels))
    return {"max_abs_error": max_abs, "mse": mse if np.isfinite(mse) else float("inf"), "scale": scale,
            "top1_agreement": top1, "accuracy": accuracy, "reference_accuracy": ref_accuracy,
            "nonfinite_outputs": nonfinite, "worst": worst}


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None


def _num(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "inf" if value is not None and value > 0 else "nan"
    return f"{value:.3g}" if value and (abs(value) < 1e-3 or abs(value) >= 1e4) else f"{value:.4g}"
