"""A converted model folder read back for verify: model.json's inputs, the manifest, the shard files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from topology.graph import InputSpec
from topology.vocabulary.errors import ConversionError
from writer.tfjs_files import manifest_files, read_model_json
from writer.verify.report import VerificationFailed

# Quantizations from weakest to strongest: the strongest in a model picks the default tolerance.
QUANT_RANK = [None, "uint16", "float16", "uint8"]


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
    def is_graph_model(self) -> bool:
        return self.document.get("format") == "graph-model"

    @property
    def fixed_batch(self) -> int | None:
        """The batch size a GraphModel traced with a concrete batch takes (None: any)."""
        if not self.is_graph_model:
            return None
        sizes = {int(info["tensorShape"]["dim"][0]["size"]) for info in self.document["signature"]["inputs"].values()
                 if info["tensorShape"]["dim"]}
        return next(iter(sizes)) if sizes and min(sizes) > 0 else None

    @property
    def quantization(self) -> str | None:
        found = {w.get("quantization", {}).get("dtype") for w in self.weights if isinstance(w.get("quantization"), dict)}
        return max(found, key=QUANT_RANK.index, default=None) if found <= set(QUANT_RANK) else "uint8"

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
        document = read_model_json(folder)
        topology = document["modelTopology"]
        if document.get("format") == "graph-model":
            inputs = _graph_inputs(document)
        else:
            config = topology.get("model_config", topology)
            inputs = _scalar_inputs(_input_specs(config), document)
        weights, paths = manifest_files(folder, document)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConversionError("MODEL_INVALID", f"{path} is not a LayersModel model.json ({type(exc).__name__}: {exc})",
                              "reconvert the checkpoint into a fresh folder") from None
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise VerificationFailed("MODEL_INVALID", f"{path} lists weight files that do not exist: {', '.join(missing)}",
                                 "copy the whole output folder, or reconvert")
    size = path.stat().st_size + sum(p.stat().st_size for p in paths)
    return ModelFiles(folder, document, inputs, weights, paths, size)


def _graph_inputs(document: dict) -> list[InputSpec]:
    """A GraphModel's inputs, from its signature (shapes without the batch axis)."""
    dtypes = {"DT_FLOAT": "float32", "DT_INT32": "int32"}
    specs = []
    for name, info in document["signature"]["inputs"].items():
        dims = [int(d["size"]) for d in info["tensorShape"]["dim"]]
        specs.append(InputSpec(name, tuple(dims[1:]), dtypes[info["dtype"]]))
    return specs


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

