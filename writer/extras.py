"""Optional parts of flax2tfjs: name the pip extra when one is missing (never an INTERNAL error).

Converting a checkpoint needs only the core dependencies. Tracing a module
(``--module``) and ``verify`` run JAX/Flax: the ``[jax]`` extra. ``export-savedmodel``
runs TensorFlow: the ``[tensorflow]`` extra (writer/commands/export/savedmodel.py checks that one,
since it may also use another interpreter).

Example:
    >>> require_jax("verify") if jax_installed() else None
    >>> missing_extra("flax.linen")
    'jax'
    >>> missing_extra("scipy") is None
    True
"""
from __future__ import annotations

import importlib.util

from topology.vocabulary.errors import ConversionError

# Top-level import names -> the extra that installs them.
EXTRAS = {"jax": "jax", "jaxlib": "jax", "flax": "jax", "orbax": "jax", "optax": "jax",
          "tensorflow": "tensorflow", "tf_keras": "tensorflow", "jsonschema": "schema", "transformers": "hf"}
_JAX_MODULES = ("jax", "flax")


def jax_installed() -> bool:
    """True when jax and flax can be imported (without importing them).

    Example:
        >>> isinstance(jax_installed(), bool)
        True
    """
    return all(importlib.util.find_spec(name) is not None for name in _JAX_MODULES)


def missing_extra(module_name: str | None) -> str | None:
    """The extra that provides ``module_name`` (as in ``ModuleNotFoundError.name``), or None.

    Example:
        >>> missing_extra("jax._src.core")
        'jax'
    """
    return EXTRAS.get((module_name or "").split(".")[0])


def extra_error(extra: str, needed_for: str) -> ConversionError:
    """The coded error (exit 2) for a missing extra.

    Example:
        >>> extra_error("jax", "verify").code
        'JAX_NOT_INSTALLED'
    """
    if extra == "schema":
        return ConversionError("JSONSCHEMA_NOT_INSTALLED", f"{needed_for} needs jsonschema, which is not installed",
                               'pip install "flax2tfjs[schema]", or unset FLAX2TFJS_SCHEMA_CHECK (a few built-in rules '
                               "still check every model.json)")
    if extra == "tensorflow":
        return ConversionError("TENSORFLOW_NOT_INSTALLED", f"{needed_for} needs TensorFlow, which is not installed",
                               "pip install \"flax2tfjs[tensorflow]\" (tensorflow and tf-keras), or --tf-python")
    if extra == "hf":
        return ConversionError("TRANSFORMERS_NOT_INSTALLED", f"{needed_for} needs transformers, which is not installed",
                               'pip install "flax2tfjs[hf]" (transformers==4.57.6)')
    return ConversionError("JAX_NOT_INSTALLED", f"{needed_for} needs JAX and Flax, which are not installed "
                           "(converting a checkpoint does not)", 'pip install "flax2tfjs[jax]"')


def require_jax(needed_for: str) -> None:
    """Raise ``JAX_NOT_INSTALLED`` unless jax and flax are importable.

    Example:
        >>> require_jax("--module") if jax_installed() else None
    """
    if not jax_installed():
        raise extra_error("jax", needed_for)
