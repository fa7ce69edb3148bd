"""Assemble model.json and validate it against ``schemas/model.schema.json`` before writing."""
from __future__ import annotations

import functools
import json


@functools.lru_cache(maxsize=None)
def _validator():
    import jsonschema

    from writer.resources import files

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


def dumps_model_json(document: dict) -> str:
    """Serialise deterministically (insertion order, shortest float repr, UTF-8).

    Example:
        >>> dumps_model_json({"a": 0.1})
        '{"a": 0.1}'
    """
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
