"""A transformers Flax module called as the transformers model calls it at inference (see writer.hf_folder).

:class:`HFInference` shares its scope with the transformers module (its parameters keep
their checkpoint paths), takes the input arrays by keyword and fills in what the
transformers wrapper computes itself: an all-ones attention mask and zero token types
where they are not inputs, and position ids the way that model computes them.
Importing this module imports flax and transformers; only a HF folder conversion does.

Example:
    >>> module, architecture, kind = build_flax_module(Path("bert/"), config)   # doctest: +SKIP
    >>> architecture, kind                                                       # doctest: +SKIP
    ('FlaxBertModel', 'text')
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from topology.vocabulary.errors import ConversionError

_ARRAY_KINDS = {"input_ids": "text", "pixel_values": "vision", "input_values": "audio"}
_INFERENCE = {"deterministic": True, "return_dict": False, "output_attentions": False,
              "output_hidden_states": False, "init_cache": False, "train": False}


class HFInference(nn.Module):
    """``inner`` (a transformers Flax module) on keyword inputs, with the transformers wrapper's defaults."""

    inner: nn.Module
    input_names: tuple[str, ...] = ()
    positions: str = "arange"  # how position ids are made: "arange", "padding_offset" (RoBERTa), "mask_cumsum" (OPT)
    pad_token_id: int = 1

    def setup(self) -> None:
        nn.share_scope(self, self.inner)  # the checkpoint's paths are the inner module's

    def bind_inputs(self, names: tuple[str, ...]) -> "HFInference":
        """This module taking ``names`` as its input arrays (by keyword)."""
        return self.clone(input_names=tuple(names))

    def __call__(self, **inputs: Any) -> Any:
        accepted = inspect.signature(type(self.inner).__call__).parameters
        arguments = {name: value for name, value in _INFERENCE.items() if name in accepted}
        arguments.update(inputs)
        first = inputs[self.input_names[0]]
        batch_and_length = first.shape[:2]
        if "attention_mask" in accepted and "attention_mask" not in inputs:
            arguments["attention_mask"] = jnp.ones(batch_and_length, "i4")
        if "token_type_ids" in accepted and "token_type_ids" not in inputs and "input_ids" in inputs:
            arguments["token_type_ids"] = jnp.zeros_like(first)
        if "position_ids" in accepted and "input_ids" in inputs:
            arguments["position_ids"] = self._position_ids(inputs["input_ids"], arguments.get("attention_mask"))
        for name, parameter in list(accepted.items())[1:]:  # e.g. a head's head_mask: None, as transformers passes
            if name not in arguments and parameter.default is inspect.Parameter.empty \
                    and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                arguments[name] = None
        outputs = self.inner(**arguments)
        if not isinstance(outputs, (tuple, list)):
            return outputs
        # Every array output (a base model's last_hidden_state and pooler_output): none is computed for nothing.
        arrays = tuple(o for o in outputs if hasattr(o, "shape"))
        return arrays[0] if len(arrays) == 1 else arrays

    def _position_ids(self, input_ids: Any, attention_mask: Any) -> Any:
        if self.positions == "padding_offset":  # transformers' create_position_ids_from_input_ids
            mask = (input_ids != self.pad_token_id).astype("i4")
            return jnp.cumsum(mask, axis=1).astype("i4") * mask + self.pad_token_id
        if self.positions == "mask_cumsum":  # OPT
            return (attention_mask.cumsum(axis=1) * attention_mask) - 1
        return jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)


def build_flax_module(path: Path, config_json: dict) -> tuple[HFInference, str, str]:
    """The module that converts the folder, the Flax class name and the input kind (text, vision, audio).

    The class is built with ``_do_init=False`` from the folder's config: nothing is
    downloaded (the hub is switched off) and no random weights are made.

    Example:
        >>> module, name, kind = build_flax_module(Path("vit/"), json.loads(Path("vit/config.json").read_text()))  # doctest: +SKIP
        >>> name, kind                                                                                             # doctest: +SKIP
        ('FlaxViTModel', 'vision')
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    names = config_json.get("architectures") or []
    if not names:
        raise ConversionError("HF_UNKNOWN_ARCHITECTURE", f"{path / 'config.json'} names no class (\"architectures\")",
                              "save the folder with save_pretrained from the model class, which records it")
    name = names[0] if names[0].startswith("Flax") else f"Flax{names[0]}"
    cls = getattr(transformers, name, None)
    if cls is None or not hasattr(cls, "module_class"):
        related = sorted(n for n in dir(transformers) if n.startswith("Flax" + names[0][:4]) and n.endswith("Model"))
        raise ConversionError("HF_UNKNOWN_ARCHITECTURE",
                              f"{path / 'config.json'} names {names[0]}, and transformers "
                              f"{transformers.__version__} has no Flax class {name}",
                              "Flax classes of this family: " + (", ".join(related[:8]) or "none") +
                              "; convert with --module and your own Flax code instead")
    config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    inner = cls(config, _do_init=False).module
    accepted = inspect.signature(type(inner).__call__).parameters
    if "decoder_input_ids" in accepted:
        raise ConversionError("HF_UNSUPPORTED_MODEL", f"{name} in {path} is an encoder-decoder model (it takes "
                              "decoder_input_ids), which one TF.js LayersModel call cannot run",
                              "convert its encoder with --module and a module that calls only the encoder")
    kind = next((kind for array, kind in _ARRAY_KINDS.items() if array in accepted), None)
    if kind is None:
        raise ConversionError("HF_UNSUPPORTED_MODEL", f"{name} in {path} takes none of "
                              f"{', '.join(_ARRAY_KINDS)} ({', '.join(list(accepted)[1:6])}, ...)",
                              "convert it with --module and --call, naming its inputs")
    wrapper_source = inspect.getsource(cls.__call__) if "__call__" in vars(cls) else \
        inspect.getsource(next(c for c in cls.__mro__ if "__call__" in vars(c)).__call__)
    positions = "arange"
    if "create_position_ids_from_input_ids" in wrapper_source:
        positions = "padding_offset"
    elif "attention_mask.cumsum" in wrapper_source:
        positions = "mask_cumsum"
    pad = getattr(config, "pad_token_id", None)
    module = HFInference(inner, positions=positions, pad_token_id=1 if pad is None else int(pad))
    return module, name, kind
