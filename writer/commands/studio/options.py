"""The page's form (a JSON object) as engine options, with paths confined to ROOT.

Example:
    >>> import tempfile; root = Root(Path(tempfile.mkdtemp()))
    >>> o = convert_options({"quantize": "uint8", "shard_bytes": 1048576, "input_shape": "28,28,1"}, root)
    >>> o.quantize, o.weight_shard_size_bytes, o.input_shape
    ('uint8', 1048576, (28, 28, 1))
"""
from __future__ import annotations

from pathlib import Path  # noqa: F401 (the doctest)
from typing import Any, Sequence

from topology.infer import POOL_CHOICES, TEMPLATE_ACTIVATIONS
from topology.vocabulary.errors import ConversionError
from writer.convert import ConvertOptions
from writer.flags import default_of
from writer.commands.studio.classes import file_classes
from writer.commands.studio.paths import Root
from writer.verify import VerifyOptions

MIN_SHARD_BYTES = 4096


def _text(form: dict, key: str) -> str | None:
    """The form's ``key`` as text (``None`` when left out or empty); any other JSON type is BAD_OPTION."""
    value = form.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ConversionError("BAD_OPTION", f"{key} is {type(value).__name__} {str(value)[:40]!r}, not text",
                              "use the page, or send the field as a JSON string")
    return value


def module_spec(text: Any, root: Root) -> str | None:
    """``FILE.py:Name`` with FILE resolved inside ROOT (the model code runs, so it must be the user's own).

    A spec without a usable class name (``model.py:`` or ``model.py``) is refused with the classes
    the file defines, read with :mod:`ast` (see :mod:`writer.commands.studio.classes`), in the hint.
    """
    if not text:
        return None
    spec = str(text).strip()
    file, sep, name = spec.rpartition(":")
    if not sep:
        file, name = spec, ""
    if not file.endswith(".py"):
        raise ConversionError("BAD_MODULE_SPEC", f"{text!r} is not FILE.py:Name",
                              "pick a .py file under the studio folder and name the module class, e.g. model.py:CNN")
    path = root.resolve(file, must_exist=True)
    if not name.isidentifier():
        classes = file_classes(path)
        what = f"{spec!r} names no class" if not name else f"{name!r} is not a class name"
        hint = (f"name one of the classes {file} defines: {', '.join(f'{file}:{c}' for c in classes)}" if classes
                else f"{file} defines no class; pick the file that defines your Flax module")
        raise ConversionError("BAD_MODULE_SPEC", f"{what} (write FILE.py:Name)", hint)
    return f"{path}:{name}"


def _step(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        step = int(str(value).strip())
    except ValueError:
        step = -1
    if step < 0:
        raise ConversionError("BAD_OPTION", f"step {value!r}", "give a whole checkpoint step number, or leave Step empty for the newest")
    return step


def _choice(value: Any, choices: Sequence[str], what: str, default: str) -> str:
    if value in (None, ""):
        return default
    if value not in choices:
        raise ConversionError("BAD_OPTION", f"{what} {value!r}", f"choose one of {', '.join(choices)}")
    return str(value)


def topology_fields(form: dict, root: Root) -> dict[str, Any]:
    """The fields that shape the model (shared by inspect, convert and verify): model code, step,
    and the template's activation and pooling, each with ConvertOptions' default when left out."""
    return {
        "module": module_spec(_text(form, "module"), root),
        "input_shape": _shape(form.get("input_shape")),
        "activation": _choice(form.get("activation"), tuple(TEMPLATE_ACTIVATIONS), "activation",
                              default_of(ConvertOptions, "activation")),
        "pool": _choice(form.get("pool"), POOL_CHOICES, "pooling", default_of(ConvertOptions, "pool")),
        "step": _step(form.get("step")),
    }


def _shape(text: Any) -> tuple[int, ...] | None:
    if text in (None, "", []):
        return None
    try:
        parts = text if isinstance(text, list) else str(text).replace("x", ",").split(",")
        if any(isinstance(p, (bool, float, list, dict)) or p is None for p in parts):
            raise ValueError("not whole numbers")
        shape = tuple(int(p) for p in parts if str(p).strip())
    except (ValueError, TypeError):
        shape = ()
    if not shape or min(shape) < 1 or max(shape) >= 1 << 31:
        raise ConversionError("BAD_OPTION", f"input shape {str(text)[:60]!r}",
                              "give positive sizes without the batch axis, e.g. 28,28,1")
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
        **topology_fields(form, root),
        "input_dtype": _text(form, "input_dtype") or default_of(ConvertOptions, "input_dtype"),
        "format": _text(form, "format") or default_of(ConvertOptions, "format"),
    }
    if not inspect_only:
        shard = form.get("shard_bytes") or default_of(ConvertOptions, "weight_shard_size_bytes")
        if not isinstance(shard, int) or isinstance(shard, bool):
            raise ConversionError("BAD_OPTION", f"shard size {str(shard)[:40]!r}", "give a whole number of bytes")
        if shard < MIN_SHARD_BYTES:  # one file per few bytes is never what anyone wants
            raise ConversionError("BAD_OPTION", f"shard size {shard:,} bytes is below the minimum of {MIN_SHARD_BYTES:,}",
                                  "use at least 4096 bytes, e.g. 4194304 (4 MiB)")
        fields.update(quantize=_text(form, "quantize"), weight_shard_size_bytes=shard,
                      metadata=_metadata(form.get("metadata")), force=bool(form.get("force")),
                      allow_nonfinite=bool(form.get("allow_nonfinite")))
        if form.get("optimize") is not None:
            fields["optimize"] = bool(form["optimize"])
    options = ConvertOptions(**fields)
    options.check()
    return options


def verify_options(form: dict, root: Root) -> VerifyOptions:
    """VerifyOptions matching a conversion's form (same model code and input shape; verify's defaults)."""
    return VerifyOptions(**topology_fields(form, root))

