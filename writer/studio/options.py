"""The page's form (a JSON object) as engine options, with paths confined to ROOT.

Example:
    >>> import tempfile; root = Root(Path(tempfile.mkdtemp()))
    >>> o = convert_options({"quantize": "uint8", "shard_bytes": 1048576, "input_shape": "28,28,1"}, root)
    >>> o.quantize, o.weight_shard_size_bytes, o.input_shape
    ('uint8', 1048576, (28, 28, 1))
"""
from __future__ import annotations

from pathlib import Path  # noqa: F401 (the doctest)
from typing import Any

from topology.vocabulary.errors import ConversionError
from writer.convert import ConvertOptions
from writer.flags import default_of
from writer.studio.paths import Root
from writer.verify import VerifyOptions


def module_spec(text: Any, root: Root) -> str | None:
    """``FILE.py:Name`` with FILE resolved inside ROOT (the model code runs, so it must be the user's own)."""
    if not text:
        return None
    file, sep, name = str(text).strip().rpartition(":")
    if not sep or not file.endswith(".py") or not name.isidentifier():
        raise ConversionError("BAD_MODULE_SPEC", f"{text!r} is not FILE.py:Name",
                              "pick a .py file under the studio folder and name the module class, e.g. model.py:CNN")
    path = root.resolve(file, must_exist=True)
    return f"{path}:{name}"


def _shape(text: Any) -> tuple[int, ...] | None:
    if text in (None, "", []):
        return None
    try:
        parts = text if isinstance(text, list) else str(text).replace("x", ",").split(",")
        shape = tuple(int(p) for p in parts if str(p).strip())
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ConversionError("BAD_OPTION", f"input shape {text!r}", "give positive sizes without the batch axis, e.g. 28,28,1")
    return shape


def _metadata(value: Any) -> dict:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ConversionError("BAD_METADATA", "the metadata is not a JSON object", 'write e.g. {"labels": ["0", "1"]}')
    if "flax2tfjs" in value:
        raise ConversionError("BAD_METADATA", "the metadata key 'flax2tfjs' is reserved for provenance", "choose another key")
    return value


def convert_options(form: dict, root: Root, inspect_only: bool = False) -> ConvertOptions:
    """ConvertOptions from the page's form; what the form leaves out keeps ConvertOptions' defaults."""
    fields: dict[str, Any] = {
        "module": module_spec(form.get("module"), root),
        "input_shape": _shape(form.get("input_shape")),
        "input_dtype": form.get("input_dtype") or default_of(ConvertOptions, "input_dtype"),
        "format": form.get("format") or default_of(ConvertOptions, "format"),
    }
    if not inspect_only:
        shard = form.get("shard_bytes") or default_of(ConvertOptions, "weight_shard_size_bytes")
        if not isinstance(shard, int) or isinstance(shard, bool):
            raise ConversionError("BAD_OPTION", f"shard size {shard!r}", "give a whole number of bytes")
        fields.update(quantize=form.get("quantize") or None, weight_shard_size_bytes=shard,
                      metadata=_metadata(form.get("metadata")), force=bool(form.get("force")))
        if form.get("optimize") is not None:
            fields["optimize"] = bool(form["optimize"])
    options = ConvertOptions(**fields)
    options.check()
    return options


def verify_options(form: dict, root: Root) -> VerifyOptions:
    """VerifyOptions matching a conversion's form (same model code and input shape; verify's defaults)."""
    return VerifyOptions(module=module_spec(form.get("module"), root), input_shape=_shape(form.get("input_shape")))

