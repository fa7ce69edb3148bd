"""How a layer kind or op handler refuses what TF.js layers cannot express: UNSUPPORTED_OPERATION
naming the construct and the user's source line (Flax's and the model's own errors met while tracing are
``topology/trace/model_errors.py``)."""
from __future__ import annotations

from topology.vocabulary.errors import ConversionError


def unsupported(what: str, where: str, hint: str) -> ConversionError:
    """UNSUPPORTED_OPERATION naming ``what`` and the user's ``where`` (file:line, or a layer path).

    Example:
        >>> unsupported("operation `cumsum`", "model.py:7", "use a layer").message
        'operation `cumsum` at model.py:7 has no TF.js layer equivalent'
    """
    at = f" at {where}" if where else ""
    return ConversionError("UNSUPPORTED_OPERATION", f"{what}{at} has no TF.js layer equivalent", hint)
