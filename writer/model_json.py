"""Assemble model.json (:func:`assemble_model_json`) and check it before writing.

Every conversion runs :func:`check_model_json`, a few structural checks in plain Python.
The full check against ``schemas/model.schema.json`` (:func:`validate_model_json`) needs
jsonschema, whose import costs more than converting a small model; conversions run it when
``FLAX2TFJS_SCHEMA_CHECK=1`` is set (the test suite sets it, so every model a test writes is
checked against the schema) or when jsonschema is already imported.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

from writer.extras import extra_error
from writer.resources import files
from writer.version import __version__


def assemble_model_json(topology: dict, manifest_group: dict, provenance: dict, metadata: dict) -> dict:
    """The model.json document of a LayersModel: its Keras topology, one weight group, and the user's
    metadata beside flax2tfjs' provenance.

    Example:
        >>> doc = assemble_model_json({"class_name": "Sequential"}, {"paths": [], "weights": []}, {}, {"labels": []})
        >>> list(doc), list(doc["userDefinedMetadata"])
        (['format', 'generatedBy', 'convertedBy', 'modelTopology', 'weightsManifest', 'userDefinedMetadata'], ['flax2tfjs', 'labels'])
    """
    return {
        "format": "layers-model",
        "generatedBy": f"flax2tfjs {__version__}",
        "convertedBy": f"flax2tfjs {__version__}",
        "modelTopology": topology,
        "weightsManifest": [manifest_group],
        "userDefinedMetadata": {"flax2tfjs": provenance, **metadata},
    }


@functools.lru_cache(maxsize=None)
def _validator():
    try:
        import jsonschema
    except ModuleNotFoundError:  # the [schema] extra: not a core dependency
        raise extra_error("schema", "the full model.json check (FLAX2TFJS_SCHEMA_CHECK=1)") from None

    schema = json.loads((files("schemas") / "model.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def validate_model_json(document: dict) -> None:
    """Raise ``ValueError`` listing every schema violation of ``document``.

    Example:
        >>> validate_model_json({"format": "layers-model"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: model.json violates schemas/model.schema.json: ...
    """
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors[:5])
        raise ValueError(f"model.json violates schemas/model.schema.json: {details}")


def check_model_json(document: dict) -> None:
    """Check what a loader depends on: the keys, and a manifest whose entries are all well-formed.

    Runs the full schema check too when ``FLAX2TFJS_SCHEMA_CHECK=1`` or jsonschema is loaded.

    Example:
        >>> check_model_json({"format": "layers-model"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: model.json is malformed: ...
    """
    problems = []
    for key, kind in (("format", str), ("generatedBy", str), ("modelTopology", dict), ("weightsManifest", list),
                      ("userDefinedMetadata", dict)):
        if not isinstance(document.get(key), kind):
            problems.append(f"{key} is missing or not a {kind.__name__}")
    if document.get("format") != "layers-model":
        problems.append("format is not 'layers-model'")
    for i, group in enumerate(document.get("weightsManifest") or []):
        if not isinstance(group, dict) or not group.get("paths") or not isinstance(group.get("weights"), list):
            problems.append(f"weightsManifest/{i} needs paths and weights")
            continue
        for j, weight in enumerate(group["weights"]):
            if not (isinstance(weight.get("name"), str) and isinstance(weight.get("shape"), list)
                    and weight.get("dtype") == "float32"):
                problems.append(f"weightsManifest/{i}/weights/{j} needs a name, a shape and dtype float32")
    if problems:
        raise ValueError("model.json is malformed: " + "; ".join(problems[:5]))
    if os.environ.get("FLAX2TFJS_SCHEMA_CHECK") == "1" or "jsonschema" in sys.modules:
        validate_model_json(document)


def dumps_model_json(document: dict) -> str:
    """Serialise deterministically (insertion order, shortest float repr, UTF-8).

    Example:
        >>> dumps_model_json({"a": 0.1})
        '{"a": 0.1}'
    """
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


_STREAM_DEPTH = 6  # document > modelTopology > model_config > config > layers: the long lists are at depth 5
_STREAM_ITEMS = 1024  # list items serialised per json.dumps call


def write_model_json(path: str | os.PathLike, document: dict) -> int:
    """Write ``document`` to ``path`` exactly as :func:`dumps_model_json` would; returns the bytes written.

    The text is made piece by piece (a model of 100,000 layers has a 30 MB model.json, which as one
    string and its UTF-8 copy would double the conversion's peak memory).

    Example:
        >>> import tempfile; f = Path(tempfile.mkdtemp()) / "model.json"
        >>> doc = {"a": [1.5, {"b": "é"}], "c": {}}
        >>> write_model_json(f, doc) == len(dumps_model_json(doc).encode()), f.read_text("utf-8") == dumps_model_json(doc)
        (True, True)
    """
    with open(path, "w", encoding="utf-8", newline="") as handle:
        _write_value(handle.write, document, _STREAM_DEPTH)
    return os.stat(path).st_size


def _write_value(write, value, depth: int) -> None:
    if depth and isinstance(value, dict) and value and all(type(k) is str for k in value):
        write("{")
        for i, (key, item) in enumerate(value.items()):
            write(("" if i == 0 else ", ") + _dumps(key) + ": ")
            _write_value(write, item, depth - 1)
        write("}")
    elif depth and isinstance(value, list) and value:
        write("[")
        for start in range(0, len(value), _STREAM_ITEMS):
            if start:
                write(", ")
            write(_dumps(value[start:start + _STREAM_ITEMS])[1:-1])  # the items without the brackets
        write("]")
    else:
        write(_dumps(value))


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
