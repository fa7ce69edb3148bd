"""Hugging Face ``save_pretrained`` folders with no model code: ``python -m writer hf_folder/ out/``.

A folder holding ``config.json`` and ``flax_model.msgpack`` names its class in
``config.json`` ("architectures": ``BertForSequenceClassification`` ->
``transformers.FlaxBertForSequenceClassification``). The class is built from the
installed transformers with the folder's config (no download, no random init), and
its Flax module is traced on the checkpoint like any ``--module``, called the way
the transformers model calls it at inference, with these inputs (named so in
model.json):

* text (a module taking ``input_ids``), int32, of the sequence length ``--input-shape S``
  (default: the config's ``max_position_embeddings``, at most 128): a model with token
  types (the BERT family: the config has ``type_vocab_size``) takes ``input_ids``,
  ``attention_mask``, ``token_type_ids``; a model without them (decoder LMs: GPT-2,
  Llama, OPT, ...) takes ``input_ids`` only, since causal attention keeps right padding
  from changing the outputs at the real tokens. ``--call '(input_ids=*, attention_mask=*)'``
  chooses other inputs. Position ids, and the mask and token types that are not inputs,
  are computed in the model as transformers computes them;
* vision (``pixel_values``): one float32 image, channels last ``(H, W, C)`` (the
  transformers wrapper takes NCHW and transposes it), ``H = W =`` the config's
  ``image_size`` (default 224), or ``--input-shape H,W,C``;
* audio (``input_values``): float32 samples, ``--input-shape N`` (default 16000: one
  second at 16 kHz).

The outputs are the model's array outputs in transformers' order: ``last_hidden_state``
(and ``pooler_output`` where the model has a pooler) for a base model, ``logits`` for a head.

Example:
    >>> hf_folder_config(Path("examples/mnist_ckpt")) is None
    True
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topology.trace.call_spec import CallSpec
from topology.vocabulary.errors import ConversionError
from writer.extras import require_jax

TRANSFORMERS_PIN = "transformers==4.57.6"  # the version tested (tests/test_public_models.py)
WEIGHTS_FILE = "flax_model.msgpack"
DEFAULT_SEQUENCE = 128  # text inputs: at most this many tokens unless --input-shape says otherwise
DEFAULT_IMAGE = 224
DEFAULT_AUDIO = 16000  # one second at 16 kHz
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class HFModel:
    """What a HF folder converts as: its weights file, the traced module and the options that call it."""

    weights: Path
    module: Any
    options: Any  # writer.convert.ConvertOptions (not imported: convert imports this module)
    architecture: str
    notice: str  # the HF_FOLDER assumption: what was built and how it is called


def hf_folder_config(path: Path) -> dict | None:
    """The parsed ``config.json`` of a transformers ``save_pretrained`` folder, or None for anything else.

    Example:
        >>> hf_folder_config(Path("no/such/folder")) is None
        True
    """
    config = path / "config.json"
    if not path.is_dir() or not config.is_file():
        return None
    try:
        document = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and "model_type" in document else None


def open_hf_folder(path: Path, config: dict, options: Any) -> HFModel:
    """Build the Flax class ``config.json`` names and the options (inputs, call) that convert it.

    Example:
        >>> model = open_hf_folder(Path("bert/"), hf_folder_config(Path("bert/")), ConvertOptions())  # doctest: +SKIP
        >>> [spec for spec in model.options.input_shape]                                             # doctest: +SKIP
        [(128,), (128,), (128,)]
    """
    weights = _weights_file(path)
    require_jax(f"converting the Hugging Face folder {path}")
    if importlib.util.find_spec("transformers") is None:
        raise ConversionError("TRANSFORMERS_NOT_INSTALLED",
                              f"{path} is a Hugging Face folder ({config.get('model_type')}); building its Flax "
                              "class needs transformers, which is not installed",
                              f'pip install "{TRANSFORMERS_PIN}" (or pip install "flax2tfjs[hf]")')
    # Local: transformers and flax cost seconds to import, and only a HF folder needs them.
    from writer.hf_call import build_flax_module  # noqa: PLC0415

    module, architecture, kind_inputs = build_flax_module(path, config)
    inputs = _inputs(kind_inputs, config, options, path)
    dtypes = [dtype for _, _, dtype in inputs]
    if options.input_dtype is not None and options.input_dtypes(len(inputs)) != dtypes:  # never replaced silently
        raise ConversionError("INPUT_DTYPE_MISMATCH", f"--input-dtype {' '.join(options.input_dtypes(len(inputs)))} "
                              f"for {path}, whose inputs take {' '.join(dtypes)}",
                              "leave --input-dtype out: a Hugging Face folder's input dtypes follow from its model")
    names = tuple(name for name, _, _ in inputs)
    fields = dict(input_shape=[shape for _, shape, _ in inputs], input_dtype=[dtype for _, _, dtype in inputs],
                  call=CallSpec(inputs=names))
    metadata = {"huggingface": {"architecture": architecture, "model_type": config.get("model_type"),
                                "inputs": list(names), "outputs": "the model's array outputs in transformers' "
                                "order (last_hidden_state[, pooler_output], or logits)"}}
    fields["metadata"] = {**metadata, **options.metadata}
    shapes = ", ".join(f"{name} {','.join(map(str, shape))} {dtype}" for name, shape, dtype in inputs)
    notice = (f"{architecture} built from {path.name}/config.json with the installed transformers and called as "
              f"transformers calls it at inference; inputs {shapes} (--input-shape sets the "
              f"{'sequence length' if kind_inputs == 'text' else 'shape'}); the outputs are its array outputs "
              "in order (last_hidden_state and pooler_output of a base model, logits of a head)")
    return HFModel(weights, module.bind_inputs(names), dataclasses.replace(options, **fields), architecture, notice)


def _weights_file(path: Path) -> Path:
    weights = path / WEIGHTS_FILE
    if weights.is_file():
        return weights
    if (path / f"{WEIGHTS_FILE}.index.json").is_file():
        raise ConversionError("HF_SHARDED_WEIGHTS", f"{path} holds Flax weights in shards "
                              f"({WEIGHTS_FILE}.index.json), which are not read yet",
                              "save it again in one file: model.save_pretrained(folder, max_shard_size='100GB')")
    others = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".h5"))
    raise ConversionError("HF_NO_FLAX_WEIGHTS",
                          f"{path} has a config.json but no {WEIGHTS_FILE}"
                          + (f" (only {', '.join(others[:4])})" if others else ""),
                          "save the Flax weights: FlaxAutoModel.from_pretrained(folder, from_pt=True)"
                          ".save_pretrained(folder) (needs torch once), or save_pretrained from your Flax model")


def _inputs(kind: str, config: dict, options: Any, path: Path) -> list[tuple[str, tuple, str]]:
    given = options.input_shapes()
    if kind == "text":
        chosen = list(options.call_spec().inputs) if options.call is not None else []  # --call '(input_ids=*, ...)'
        names = chosen or (list(TEXT_INPUTS) if config.get("type_vocab_size") else ["input_ids"])
        if given and (len(given) != 1 or len(given[0]) != 1):
            raise ConversionError("HF_INPUT_SHAPE", f"--input-shape {_shapes(given)} for the text model in {path}",
                                  "give the sequence length once, e.g. --input-shape 64 (every text input has it)")
        positions = config.get("max_position_embeddings") or config.get("n_positions") or DEFAULT_SEQUENCE
        length = given[0][0] if given else min(DEFAULT_SEQUENCE, int(positions))
        return [(name, (length,), "int32") for name in names]
    if kind == "vision":
        size = config.get("image_size") or DEFAULT_IMAGE
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        shape = given[0] if given else (height, width, int(config.get("num_channels") or 3))
        if len(given) > 1 or len(shape) != 3:
            raise ConversionError("HF_INPUT_SHAPE", f"--input-shape {_shapes(given)} for the vision model in {path}",
                                  "give one image shape, channels last, e.g. --input-shape 224,224,3")
        return [("pixel_values", tuple(shape), "float32")]
    shape = given[0] if given else (DEFAULT_AUDIO,)
    if len(given) > 1 or len(shape) != 1:
        raise ConversionError("HF_INPUT_SHAPE", f"--input-shape {_shapes(given)} for the audio model in {path}",
                              "give the number of samples, e.g. --input-shape 16000")
    return [("input_values", tuple(shape), "float32")]


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    return " ".join(",".join(map(str, shape)) or '""' for shape in shapes)
