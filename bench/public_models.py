"""Public models: real transformers Flax classes (tiny configs), saved with ``save_pretrained`` and converted
from the folder alone (``python -m writer FOLDER out/``), compared in real TF.js with the transformers model.

    python -m bench.public_models                 # every model; writes docs/public-models.md
    python -m bench.public_models --only bert,vit # some; prints the table only

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
# Cases that need the lowering branch's mechanisms (issue 20 points 1-3), by what they need.
NEEDS_LOWERING = {
    "gpt2": "tied LM head (a module applied with computed parameters)",
    "gpt-neo": "a module called twice, the first result unused (dead code)",
    "opt": "a reshape merging batch and sequence around per-token layers ((B, S, H) -> (B*S, H) and back)",
    "roberta": "cumsum of the padding mask (position ids)",
    "llama": "RMSNorm written in jnp",
    "gemma": "RMSNorm written in jnp (x * (1 + w))",
    "clip-vision": "quick_gelu written in jnp",
    "wav2vec2": "weight-normed positional conv (computed parameters) and pad",
    "roformer": "stack + reshape interleaving (rotary sin/cos)",
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

    @property
    def needs_lowering(self) -> str | None:
        return NEEDS_LOWERING.get(self.name)


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


def run_case(case: Case, tfjs: Any, work: Path) -> Outcome:
    """Save, convert from the folder alone, predict in TF.js and compare; never raises."""
    from writer import ConversionError, to_tensorflowjs

    started = time.perf_counter()
    folder, out = work / case.name, work / f"{case.name}-tfjs"
    outcome = Outcome(case.name, case.flax_class, "failed")
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # transformers' deprecation banner
            module, tfjs_inputs, _, expected = build_folder(case, folder)
        if case.kind == "module":
            report = to_tensorflowjs(folder / "checkpoint.msgpack", out, module=module, input_shape=input_shape(case),
                                     force=True)
        else:
            report = to_tensorflowjs(folder, out, input_shape=input_shape(case), force=True)
        outcome.inputs = [spec.name for spec in report.inputs]
        actual = tfjs.predict(out, tfjs_inputs).outputs[0]  # the first output: last_hidden_state or logits
        outcome.max_abs_error = float(np.max(np.abs(actual.astype(np.float64) - expected)))
        outcome.top1 = float(np.mean(np.argmax(actual, -1) == np.argmax(expected, -1)))
        outcome.status = "converted"
    except ConversionError as err:
        outcome.status, outcome.detail = f"error[{err.code}]", err.message[:160]
    except Exception as exc:  # noqa: BLE001  reported in the table, never hidden
        outcome.detail = f"{type(exc).__name__}: {str(exc)[:160]}"
    outcome.seconds = time.perf_counter() - started
    return outcome


def matches(outcome: Outcome, expected_scale: float = 1.0) -> bool:
    """Converted and equal to transformers within float32 tolerance (1e-4 relative to the output scale)."""
    return outcome.status == "converted" and outcome.max_abs_error is not None \
        and outcome.max_abs_error <= 1e-4 * max(1.0, expected_scale)


def render(outcomes: list[Outcome]) -> str:
    """docs/public-models.md."""
    passed = sum(o.status == "converted" and (o.max_abs_error or 0) <= 1e-3 for o in outcomes)
    lines = [
        "# Public models (generated)",
        "",
        "Written by `python -m bench.public_models`; do not edit. Real transformers "
        f"{_transformers_version()} Flax classes with tiny configs (hidden 32, 2 layers, sequence {SEQUENCE}, "
        f"images {IMAGE}x{IMAGE}, {AUDIO} audio samples), saved with `save_pretrained` and converted from the "
        "folder alone (`python -m writer FOLDER out/`, see [guides/hf-folder.md](guides/hf-folder.md)); "
        "each conversion predicted in real TF.js 4.22 (Node) and compared with the transformers model's own "
        f"call on {BATCH} examples (text models with token types also take a ragged attention mask: the "
        "second example ends in padding). Top-1 agreement is the arg-max over the last axis of the first output. "
        "Also flaxmodels' ResNet-18 (a Linen model zoo, not transformers): its variables saved with "
        "`flax.serialization.to_bytes` and converted with `--module`.",
        "",
        f"**{passed} of {len(outcomes)}** convert and match.",
        "",
        "| model | Flax class | result | max abs error | top-1 agreement | inputs | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        error = f"{o.max_abs_error:.2e}" if o.max_abs_error is not None else "–"
        top1 = f"{o.top1:.0%}" if o.top1 is not None else "–"
        note = o.detail.replace("|", "/") if o.status != "converted" else ""
        if o.status != "converted" and o.name in NEEDS_LOWERING:
            note = f"needs: {NEEDS_LOWERING[o.name]}. {note}"
        lines.append(f"| {o.name} | `{o.flax_class}` | {o.status} | {error} | {top1} | "
                     f"{', '.join(o.inputs) or '–'} | {note} |")
    return "\n".join(lines) + "\n"


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.public_models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated case names (prints the table, writes no page)")
    args = parser.parse_args(argv)
    from writer.tfjs_node import TfjsRunner

    chosen = [c for c in CASES if not args.only or c.name in args.only.split(",")]
    work = Path(tempfile.mkdtemp(prefix="public-models-"))
    outcomes = []
    try:
        with TfjsRunner() as tfjs:
            for case in chosen:
                outcomes.append(run_case(case, tfjs, work))
                o = outcomes[-1]
                print(f"{o.name:14s} {o.status:34s} {o.max_abs_error if o.max_abs_error is not None else '':<12} "
                      f"{o.seconds:5.1f} s {o.detail[:100]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    page = render(outcomes)
    if not args.only:
        DOC.write_text(page, encoding="utf-8")
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
