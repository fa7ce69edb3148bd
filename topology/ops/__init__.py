"""Handlers for the JAX operations found between layer calls, one module per family.

A handler takes ``(builder, eqn, values, where)`` and returns the value (or
list of values) of the equation's outputs. Register with :func:`handles`; a
primitive handled twice is refused. An op family is a module of this package
that declares its test cases (``CASES``); the families are found by listing the
package, so adding one = adding its module. Modules without ``CASES`` are
shared helpers (importing every module registers every handler).
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

from topology.registry import Registry, plugin_modules

Handler = Callable[..., Any]
HANDLERS: Registry[Handler] = Registry("handler for primitive")


def handles(*primitives: str) -> Callable[[Handler], Handler]:
    """Register the decorated function for the named JAX primitives (ValueError if one is taken).

    Example:
        >>> @handles("my_prim")
        ... def f(builder, eqn, values, where): ...
        >>> HANDLERS.pop("my_prim") is f
        True
    """
    return HANDLERS.decorator(*primitives)


def handler_for(eqn: Any) -> Handler | None:
    """The handler for ``eqn``'s primitive, if any."""
    families()
    return HANDLERS.get(eqn.primitive.name)


_families: dict[str, ModuleType] = {}


def families() -> dict[str, ModuleType]:
    """The op families by name (``"activations"``, ...), in name order; importing them registers the handlers.

    Example:
        >>> "slicing" in families(), "reshape" in HANDLERS
        (True, True)
    """
    if not _families:
        for module in plugin_modules(__name__, "CASES"):
            _families[module.__name__.rpartition(".")[2]] = module
    return _families
