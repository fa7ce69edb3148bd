"""Public models: real transformers Flax classes (tiny configs), saved with ``save_pretrained`` and converted
from the folder alone (``python -m writer FOLDER out/``), compared in real TF.js with the transformers model.

    python -m bench.public_models                 # every model; writes docs/public-models.md
    python -m bench.public_models --only bert,vit # some; prints the table only
    python -m bench.public_models --formats graph-model   # one format; prints the table only

The reference is the transformers model's own call (``model(..., params=model.params, train=False)``),
so the conversion's inputs and the defaults it fills in (position ids, masks, token types) are
checked against transformers itself. Text inputs carry a ragged attention mask (the second example
ends in padding). tests/test_public_models.py runs the same cases.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "public-models.md"
SEQUENCE = 8
IMAGE = 32
AUDIO = 400
BATCH = 2
TEXT = dict(vocab_size=99, max_position_embeddings=64)
ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **TEXT)
VISION = dict(image_size=IMAGE, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=37)
FORMATS = ("layers-model", "graph-model", "auto")  # each case is converted in each (--format)
# The cases that do not convert and match in a format today, with the coded error each stops with
# (measured by `python -m bench.public_models`; tests/test_public_models.py xfails exactly these, strictly).
KNOWN_FAILURES: dict[str, dict[str, str]] = {
    "layers-model": {},
    "graph-model": {},
    "auto": {},
}


@dataclass(frozen=True)
class Case:
    """One public model: its transformers config class and arguments, Flax class and input kind."""

    name: str
    config: str  # transformers config class
    flax_class: str
    kind: str  # "text" | "vision" | "audio"
    arguments: dict = field(default_factory=dict)
    core: bool = False  # in the default test run (tests/test_public_models.py); the rest with --all-public

    def known_failure(self, format: str = "layers-model") -> str | None:
        """The coded error this case stops with in ``format`` today, or None when it converts and matches."""
        return KNOWN_FAILURES[format].get(self.name)


CASES = [
    Case("bert", "BertConfig", "FlaxBertModel", "text", ENCODER, core=True),
    Case("bert-classifier", "BertConfig", "FlaxBertForSequenceClassification", "text", {**ENCODER, "num_labels": 3}),
    Case("roberta", "RobertaConfig", "FlaxRobertaModel", "text", {**ENCODER, "max_position_embeddings": 70}),
    Case("electra", "ElectraConfig", "FlaxElectraModel", "text", {**ENCODER, "embedding_size": 16}),
    Case("albert", "AlbertConfig", "FlaxAlbertModel", "text", {**ENCODER, "embedding_size": 16}),
    Case("roformer", "RoFormerConfig", "FlaxRoFormerModel", "text", {**ENCODER, "embedding_size": 32}),
    Case("gpt2", "GPT2Config", "FlaxGPT2LMHeadModel", "text",
         dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=99), core=True),
    Case("gpt-neo", "GPTNeoConfig", "FlaxGPTNeoModel", "text",
         dict(hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]], window_size=4,
              **TEXT)),
    Case("opt", "OPTConfig", "FlaxOPTModel", "text",
         dict(hidden_size=32, num_hidden_layers=2, ffn_dim=37, num_attention_heads=4, word_embed_proj_dim=32, **TEXT)),
    Case("llama", "LlamaConfig", "FlaxLlamaModel", "text",
         dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=4, **TEXT), core=True),
    Case("gemma", "GemmaConfig", "FlaxGemmaModel", "text",
         dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
              head_dim=8, **TEXT)),
    Case("xglm", "XGLMConfig", "FlaxXGLMModel", "text",
         dict(d_model=32, num_layers=2, attention_heads=4, ffn_dim=37, **TEXT)),
    Case("vit", "ViTConfig", "FlaxViTModel", "vision", VISION),
    Case("beit", "BeitConfig", "FlaxBeitModel", "vision", {**VISION, "use_mask_token": False}),
    Case("clip-vision", "CLIPVisionConfig", "FlaxCLIPVisionModel", "vision", VISION, core=True),
    Case("dinov2", "Dinov2Config", "FlaxDinov2Model", "vision", VISION),
    Case("regnet", "RegNetConfig", "FlaxRegNetModel", "vision",
         dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8)),
    Case("wav2vec2", "Wav2Vec2Config", "FlaxWav2Vec2Model", "audio",
         dict(do_stable_layer_norm=True, feat_extract_norm="layer", hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, conv_dim=(8, 8),
              conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
              vocab_size=32), core=True),
    # Not transformers: a Flax model zoo's module, saved as users save Linen variables, converted with --module.
    Case("flaxmodels-resnet18", "flaxmodels", "ResNet18", "module",
         dict(output="logits", pretrained=None, num_classes=10)),
]


@dataclass
class Outcome:
    """What happened to one case."""

    name: str
    flax_class: str
    status: str  # "converted" | "error[CODE]" | "failed"
    format: str = "layers-model"  # the --format asked for
    written: str = ""  # the format written: "layers-model" | "graph-model" (what `auto` chose)
    max_abs_error: float | None = None
    top1: float | None = None
    seconds: float = 0.0
    detail: str = ""
    inputs: list = field(default_factory=list)


def build_folder(case: Case, folder: Path) -> tuple[Any, list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Save ``case``'s model into ``folder``; return it, the inputs TF.js takes, those transformers takes,
    and the transformers output on them."""
    if case.kind == "module":
        return _build_module_checkpoint(case, folder)
    import transformers

    config = getattr(transformers, case.config)(**case.arguments)
    model = getattr(transformers, case.flax_class)(config, seed=0)
    model.save_pretrained(folder)
    rng = np.random.RandomState(0)
    if case.kind == "text":
        ids = rng.randint(2, 99, (BATCH, SEQUENCE)).astype(np.int32)
        tfjs_inputs, kwargs = [ids], dict(input_ids=ids)
        if getattr(config, "type_vocab_size", None):  # an encoder: a ragged mask and token types
            mask = np.ones((BATCH, SEQUENCE), np.int32)
            mask[1, SEQUENCE - 3:] = 0  # the second example ends in padding
            tfjs_inputs.append(mask)
            kwargs["attention_mask"] = mask
            types = (np.arange(SEQUENCE)[None, :] >= SEQUENCE // 2).astype(np.int32).repeat(BATCH, 0)
            types = types % max(1, config.type_vocab_size)
            tfjs_inputs.append(types)
            kwargs["token_type_ids"] = types
    elif case.kind == "vision":
        pixels = rng.uniform(-1, 1, (BATCH, IMAGE, IMAGE, getattr(config, "num_channels", 3))).astype(np.float32)
        tfjs_inputs, kwargs = [pixels], dict(pixel_values=pixels.transpose(0, 3, 1, 2))  # transformers takes NCHW
    else:
        audio = rng.uniform(-1, 1, (BATCH, AUDIO)).astype(np.float32)
        tfjs_inputs, kwargs = [audio], dict(input_values=audio)
    inference = {"train": False} if "train" in inspect.signature(model.__call__).parameters else {"deterministic": True}
    outputs = model(**kwargs, params=model.params, **inference)
    expected = np.asarray(outputs[0])
    return model, tfjs_inputs, list(kwargs.values()), expected


def _build_module_checkpoint(case: Case, folder: Path) -> tuple[Any, list[np.ndarray], list[np.ndarray], np.ndarray]:
    import importlib

    import jax
    from flax.serialization import to_bytes

    module = getattr(importlib.import_module(case.config), case.flax_class)(**case.arguments)
    pixels = np.random.RandomState(0).uniform(-1, 1, (BATCH, IMAGE, IMAGE, 3)).astype(np.float32)
    variables = module.init(jax.random.PRNGKey(0), pixels[:1], train=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint.msgpack").write_bytes(to_bytes(variables))
    expected = np.asarray(module.apply(variables, pixels, train=False))
    return module, [pixels], [pixels], expected


def input_shape(case: Case) -> Any:
    """The ``--input-shape`` the tiny case converts with."""
    return {"text": (SEQUENCE,), "vision": (IMAGE, IMAGE, 3), "audio": (AUDIO,), "module": (IMAGE, IMAGE, 3)}[case.kind]


@dataclass
class Prepared:
    """A case's saved folder, the inputs TF.js takes and the transformers output (shared by its formats)."""

    folder: Path
    module: Any
    tfjs_inputs: list[np.ndarray]
    expected: np.ndarray


_PREPARED: dict[tuple[Path, str], Prepared] = {}  # (work folder, case name): saved once, converted per format


def prepare(case: Case, work: Path) -> Prepared:
    """Save ``case``'s model under ``work`` once; later formats reuse the folder and the reference output."""
    key = (work, case.name)
    if key not in _PREPARED:
        with contextlib.redirect_stderr(io.StringIO()):  # transformers' deprecation banner
            module, tfjs_inputs, _, expected = build_folder(case, work / case.name)
        _PREPARED[key] = Prepared(work / case.name, module, tfjs_inputs, expected)
    return _PREPARED[key]


def run_case(case: Case, tfjs: Any, work: Path, format: str = "layers-model") -> Outcome:
    """Save (once), convert from the folder alone with ``--format format``, predict in TF.js and compare;
    never raises."""
    from writer import ConversionError, to_tensorflowjs

    started = time.perf_counter()
    out = work / f"{case.name}-{format}"
    outcome = Outcome(case.name, case.flax_class, "failed", format)
    try:
        prepared = prepare(case, work)
        if case.kind == "module":
            report = to_tensorflowjs(prepared.folder / "checkpoint.msgpack", out, module=prepared.module,
                                     input_shape=input_shape(case), format=format, force=True)
        else:
            report = to_tensorflowjs(prepared.folder, out, input_shape=input_shape(case), format=format, force=True)
        outcome.inputs = [spec.name for spec in report.inputs]
        outcome.written = "graph-model" if report.topology == "graph-model" else "layers-model"
        actual = tfjs.predict(out, prepared.tfjs_inputs).outputs[0]  # the first output: last_hidden_state or logits
        outcome.max_abs_error = float(np.max(np.abs(actual.astype(np.float64) - prepared.expected)))
        outcome.top1 = float(np.mean(np.argmax(actual, -1) == np.argmax(prepared.expected, -1)))
        outcome.status = "converted"
    except ConversionError as err:
        outcome.status, outcome.detail = f"error[{err.code}]", err.message[:160]
    except Exception as exc:  # noqa: BLE001  reported in the table, never hidden
        outcome.detail = f"{type(exc).__name__}: {str(exc)[:160]}"
    outcome.seconds = time.perf_counter() - started
    return outcome


TOLERANCE = 1e-4  # max abs error against transformers for a match (outputs are O(1): float32 rounding is ~1e-6)


def matches(outcome: Outcome) -> bool:
    """Converted, equal to transformers within ``TOLERANCE`` and with the same arg-max everywhere."""
    return outcome.status == "converted" and outcome.max_abs_error is not None \
        and outcome.max_abs_error <= TOLERANCE and outcome.top1 == 1.0


def _cell(o: Outcome) -> str:
    if o.status != "converted":
        return o.status
    chose = " (wrote graph-model)" if o.format == "auto" and o.written == "graph-model" else ""
    mark = "ok" if matches(o) else "MISMATCH"
    return f"{mark}{chose}: {o.max_abs_error:.2e}, top-1 {o.top1:.0%}"


def render(outcomes: list[Outcome]) -> str:
    """docs/public-models.md: one row per model, one column per format, then what stops the failures."""
    formats = list(dict.fromkeys(o.format for o in outcomes))
    names = list(dict.fromkeys(o.name for o in outcomes))
    by = {(o.name, o.format): o for o in outcomes}
    totals = ", ".join(f"`{f}` **{sum(matches(o) for o in outcomes if o.format == f)} of {len(names)}**"
                       for f in formats)
    lines = [
        "# Public models (generated)",
        "",
        "Written by `python -m bench.public_models`; do not edit. Real transformers "
        f"{_transformers_version()} Flax classes with tiny configs (hidden 32, 2 layers, sequence {SEQUENCE}, "
        f"images {IMAGE}x{IMAGE}, {AUDIO} audio samples), saved with `save_pretrained` and converted from the "
        "folder alone (`python -m writer FOLDER out/ --format F`, see [guides/hf-folder.md](guides/hf-folder.md)) "
        "in each format: a LayersModel (`layers-model`, the default), a GraphModel (`graph-model`, "
        "[graph-model.md](graph-model.md)) and `auto` (a LayersModel when the layers emitter accepts the model, "
        "else a GraphModel). Each conversion is predicted in real TF.js 4.22 (Node; `tf.loadLayersModel` or "
        f"`tf.loadGraphModel`) and compared with the transformers model's own call on {BATCH} examples (text "
        "models with token types also take a ragged attention mask: the second example ends in padding). A cell "
        f"reads `ok` when the max abs error is at most {TOLERANCE:g} and the top-1 agreement (arg-max over the "
        "last axis of the first output) is 100%. Also flaxmodels' ResNet-18 (a Linen model zoo, not "
        "transformers): its variables saved with `flax.serialization.to_bytes` and converted with `--module`.",
        "",
        f"Convert and match: {totals}.",
        "",
        "| model | Flax class | inputs | " + " | ".join(f"`{f}`" for f in formats) + " |",
        "|---|---|---|" + "---|" * len(formats),
    ]
    for name in names:
        row = [by[(name, f)] for f in formats if (name, f) in by]
        inputs = next((o.inputs for o in row if o.inputs), [])
        lines.append(f"| {name} | `{row[0].flax_class}` | {', '.join(inputs) or '–'} | "
                     + " | ".join(_cell(by[(name, f)]) if (name, f) in by else "–" for f in formats) + " |")
    failures = [o for o in outcomes if not matches(o)]
    if failures:
        lines += ["", "What stops the rest:", "", "| model | format | result | detail |", "|---|---|---|---|"]
        for o in failures:
            detail = (o.detail or f"max abs error {o.max_abs_error:.2e}, top-1 {o.top1:.0%}").replace("|", "/")
            lines.append(f"| {o.name} | `{o.format}` | {o.status} | {detail} |")
    return "\n".join(lines) + "\n"


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.public_models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated case names (prints the table, writes no page)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated formats (default {','.join(FORMATS)}; a subset writes no page)")
    args = parser.parse_args(argv)
    formats = args.formats.split(",")
    from writer.tfjs_node import TfjsRunner

    chosen = [c for c in CASES if not args.only or c.name in args.only.split(",")]
    work = Path(tempfile.mkdtemp(prefix="public-models-"))
    outcomes = []
    try:
        with TfjsRunner() as tfjs:
            for case in chosen:
                for format in formats:
                    outcomes.append(run_case(case, tfjs, work, format))
                    o = outcomes[-1]
                    error = f"{o.max_abs_error:.2e}" if o.max_abs_error is not None else ""
                    print(f"{o.name:19s} {format:12s} {o.written:12s} {o.status:30s} {error:9s} "
                          f"{o.seconds:5.1f} s {o.detail[:100]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    page = render(outcomes)
    if not args.only and set(formats) == set(FORMATS):
        DOC.write_text(page, encoding="utf-8")
        print(f"wrote {DOC.relative_to(ROOT)}")
    else:
        print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
