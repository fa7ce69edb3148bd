"""Errors met while a module is traced, turned into ConversionErrors: Flax's own scope errors (naming
the variable path) and the model's own shape or dtype errors (naming the user's line)."""
from __future__ import annotations

import re
import traceback

from topology.vocabulary.errors import ConversionError

_CONVERTER_PATHS = ("/topology/", "/writer/")
_LIBRARY_PATHS = ("/jax/", "/jaxlib/", "/flax/", "/numpy/", "/optax/", "/transformers/")


def flax_error_to_conversion_error(exc: Exception) -> ConversionError | None:
    """A ConversionError for Flax scope errors, or None for anything else.

    Example:
        >>> class ScopeParamNotFoundError(Exception): pass
        >>> e = ScopeParamNotFoundError('Could not find parameter named "bias" in scope "/Dense_0".')
        >>> flax_error_to_conversion_error(e).code
        'MISSING_PARAMETER'
    """
    name, text = type(exc).__name__, str(exc)
    if name == "ScopeParamNotFoundError":
        match = re.search(r'named "([^"]+)" in scope "([^"]*)"', text)
        where = f"params{match.group(2)}/{match.group(1)}" if match else text
        return ConversionError(
            "MISSING_PARAMETER", f"the model needs {where}, which the checkpoint does not have",
            "check that the checkpoint was saved from this model (same module names and structure)",
        )
    if name == "ScopeCollectionNotFound" or "ScopeCollectionNotFound" in name:
        return ConversionError(
            "MISSING_COLLECTION", f"the model needs a variable collection the checkpoint lacks ({text.split('(')[0].strip()})",
            "BatchNorm needs batch_stats: save {'params': ..., 'batch_stats': ...}",
        )
    if name == "ScopeParamShapeError":
        match = re.search(r'parameter "([^"]+)" in "([^"]*)".*shape (\([^)]*\)), but .* has shape (\([^)]*\))', text)
        if match:
            param, scope, expected, found = match.groups()
            message = f"params{scope}/{param} has shape {found} in the checkpoint but the model expects {expected}"
        else:
            message = text.split(" (https")[0]
        return ConversionError("SHAPE_MISMATCH", message, "check --input-shape and that the checkpoint belongs to this model")
    if name in ("ModifyScopeVariableError", "InvalidRngError"):  # a layer fixed in training mode
        return ConversionError(
            "TRAINING_MODE", f"a layer runs in training mode during the inference trace ({text.split(' (https')[0]})",
            "let a flag choose the mode, e.g. nn.BatchNorm(use_running_average=not train) and "
            "nn.Dropout(rate, deterministic=not train); the converter calls the model with train=False",
        )
    return None


def model_error(exc: Exception, inputs: str, batch: int) -> ConversionError | None:
    """INPUT_SHAPE_INVALID for a JAX shape or dtype error raised by the model's own code while it is traced
    on ``inputs`` at batch ``batch`` (e.g. a squeeze of an axis that has size 1 only at batch 1); None
    when the converter raised it (an internal error stays one).

    Example:
        >>> def model(): raise ValueError("cannot select an axis to squeeze out which has size not equal to one")
        >>> try:
        ...     model()
        ... except ValueError as exc:
        ...     model_error(exc, "(2, 6) int32", 2).code
        'INPUT_SHAPE_INVALID'
    """
    if not isinstance(exc, (ValueError, TypeError, IndexError)):
        return None
    frames = [frame.filename for frame in traceback.extract_tb(exc.__traceback__)]
    own = [name for name in frames if not any(part in name for part in _LIBRARY_PATHS)]
    if not own or any(part in own[-1] for part in _CONVERTER_PATHS):
        return None  # raised in the converter's code (or nowhere we can tell): a bug, not the model's
    detail = (str(exc).strip().splitlines() or [""])[0].split(" (https://")[0][:300]
    return ConversionError(
        "INPUT_SHAPE_INVALID",
        f"the model fails on inputs of shape {inputs} at {own[-1].rsplit('/', 1)[-1]}:"
        f"{traceback.extract_tb(exc.__traceback__)[frames.index(own[-1])].lineno}: {type(exc).__name__}: {detail}",
        f"check --input-shape (without the batch axis) and --input-dtype; the converter traces at batch {batch}, "
        "so code that only works at batch 1 (squeezing the batch axis, shapes written as 1) fails",
    )
