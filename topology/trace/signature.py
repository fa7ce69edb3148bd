"""What a module's ``__call__`` needs besides its input arrays, and clear errors when the
converter cannot supply it.

The converter passes the input arrays positionally and the inference flags
(``train=False``, ``deterministic=True``, ...) by keyword. A required rng argument
(``z_rng``, ``rng``, ``key``, ``rngs``) is inference-irrelevant for a model that only
uses it for dropout or sampling noise, so it gets a fixed key (``PRNGKey(0)``, or
``nnx.Rngs(0)`` for ``rngs``) and an assumption notice. Any other required argument
(a mask, a second array passed by keyword) stops with MODULE_SIGNATURE naming it.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable

from topology.vocabulary.errors import ConversionError

# Keyword arguments that switch Flax modules to inference, and their inference values.
INFERENCE_FLAGS = {"train": False, "training": False, "is_training": False,
                   "deterministic": True, "use_running_average": True}
_RNG_NAME = re.compile(r"^(rngs?|keys?|prng|prng_key|.*_rngs?|rng_.*)$")


def _required(call: Callable) -> list[inspect.Parameter]:
    try:
        parameters = list(inspect.signature(call).parameters.values())
    except (TypeError, ValueError):
        return []
    return [p for p in parameters if p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]


def rng_names(call: Callable) -> list[str]:
    """The required arguments of ``call`` that are rng keys by their name.

    Example:
        >>> def f(self, x, z_rng): ...
        >>> rng_names(f)
        ['z_rng']
    """
    return [p.name for p in _required(call) if _RNG_NAME.match(p.name)]


def rng_arguments(call: Callable) -> dict[str, Any]:
    """A fixed key for each required rng argument: ``nnx.Rngs(0)`` for ``rngs``, else ``PRNGKey(0)``.

    Example:
        >>> def f(self, x, z_rng): ...
        >>> list(rng_arguments(f))
        ['z_rng']
    """
    names = rng_names(call)
    if not names:
        return {}
    import jax

    supplied: dict[str, Any] = {}
    for name in names:
        if name == "rngs":
            from flax import nnx

            supplied[name] = nnx.Rngs(0)
        else:
            supplied[name] = jax.random.PRNGKey(0)
    return supplied


def supplied_notice(module: Any, method: str = "__call__") -> str | None:
    """The assumption notice for the rng arguments given to ``module``'s ``__call__`` (None if none).

    Example:
        >>> class M:
        ...     def __call__(self, x, z_rng): ...
        >>> supplied_notice(M()).startswith("M.__call__ needs z_rng")
        True
    """
    names = rng_names(getattr(type(module), method, type(module).__call__))
    if not names:
        return None
    return (f"{type(module).__name__}.{method} needs {', '.join(names)}: the converter passed a fixed key "
            "(PRNGKey(0) / nnx.Rngs(0)); if the output depends on it (sampling), it is that one draw")


def suggested_call(function: Callable, method: str = "__call__") -> str:
    """A ``--call`` for ``function``: each required argument an input, the inference flags fixed.

    Example:
        >>> def f(self, x, *, mask, train=True): ...
        >>> suggested_call(f)
        '__call__(*, mask=*, train=False)'
    """
    try:
        parameters = list(inspect.signature(function).parameters.values())[1:]
    except (TypeError, ValueError):
        return f"{method}(*)"
    positional, keywords = [], []
    for p in parameters:
        if p.name in INFERENCE_FLAGS:
            keywords.append(f"{p.name}={INFERENCE_FLAGS[p.name]!r}")
        elif p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append("*")
        elif p.default is inspect.Parameter.empty and p.kind == p.KEYWORD_ONLY:
            keywords.insert(0, f"{p.name}=*")
    return f"{method}({', '.join(positional + keywords)})"


def signature_error(module: Any, exc: BaseException, method: str = "__call__") -> ConversionError | None:
    """MODULE_SIGNATURE for a TypeError about the called method's arguments, else None; its hint is
    the ``--call`` that passes what the method needs.

    Example:
        >>> class M:
        ...     def __call__(self, x, mask): ...
        >>> error = signature_error(M(), TypeError("M.__call__() missing 1 required positional argument: 'mask'"))
        >>> error.code, error.hint.split(" (")[0]
        ('MODULE_SIGNATURE', "say how to call it with --call, e.g. --call '__call__(*, *)'")
    """
    text = str(exc)
    if not isinstance(exc, TypeError) or not re.search(r"(missing \d+ required|positional argument|keyword argument)",
                                                        text):
        return None
    function = getattr(type(module), method, None)
    try:
        signature = str(inspect.signature(function))
    except (TypeError, ValueError):
        signature = "(...)"
    missing = re.findall(r"'([^']+)'", text.split(":", 1)[-1]) if "missing" in text else []
    what = f"needs {', '.join(f'`{m}`' for m in missing)}, which" if missing else "takes its arguments in a way"
    return ConversionError(
        "MODULE_SIGNATURE",
        f"{type(module).__name__}.{method}{signature} {what} the converter cannot supply "
        f"({text.splitlines()[0][:200]}); it passes the input arrays positionally, inference flags "
        "(train, deterministic, ...) and fixed rng keys by keyword",
        f"say how to call it with --call, e.g. --call '{suggested_call(function, method)}' (* marks an input "
        "array, one per --input-shape; call= in Python); or wrap the model in a module whose "
        "__call__(self, x) calls it with the other arguments fixed",
    )
