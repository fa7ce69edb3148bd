"""Handlers for the JAX operations found between layer calls, one module per family.

A handler takes ``(builder, eqn, values, where)`` and returns the value (or
list of values) of the equation's outputs. Register with :func:`handles`.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

Handler = Callable[..., Any]
HANDLERS: dict[str, Handler] = {}
_FAMILIES = ("activations", "shape_ops", "pooling", "merge", "reduce", "slicing", "constants", "dot", "scan")


def handles(*primitives: str) -> Callable[[Handler], Handler]:
    """Register the decorated function for the named JAX primitives.

    Example:
        >>> @handles("my_prim")
        ... def f(builder, eqn, values, where): ...
        >>> HANDLERS.pop("my_prim") is f
        True
    """
    def register(handler: Handler) -> Handler:
        for primitive in primitives:
            HANDLERS[primitive] = handler
        return handler

    return register


def handler_for(eqn: Any) -> Handler | None:
    """The handler for ``eqn``'s primitive, if any."""
    _load()
    return HANDLERS.get(eqn.primitive.name)


_loaded = False


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for family in _FAMILIES:
            importlib.import_module(f"topology.ops.{family}")
