"""Plugin registries: modules found in their package, each key registered once.

Layer kinds (``topology.layers``), op handlers (``topology.ops``) and graph
rewrites (``topology.optimize``) are one module each, found by listing the
package rather than by a hand-kept list. Like flax's serialization registry, a
second registration of a key is refused: two plugins claiming one key is a
programmer error, and silently keeping the last one would hide it.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Callable, TypeVar

Value = TypeVar("Value")


class Registry(dict[str, Value]):
    """A dict that refuses a key registered twice and remembers who registered each.

    Example:
        >>> kinds = Registry("layer kind")
        >>> kinds.add("dense", 1, "topology.layers.dense")
        >>> kinds.add("dense", 2, "my.plugin")
        Traceback (most recent call last):
        ValueError: layer kind 'dense' is registered twice: by topology.layers.dense and by my.plugin
    """

    def __init__(self, what: str):
        super().__init__()
        self.what = what
        self.owners: dict[str, str] = {}

    def add(self, key: str, value: Value, owner: str) -> None:
        """Register ``value`` under ``key``; ValueError naming both owners when ``key`` is taken."""
        if key in self:
            raise ValueError(f"{self.what} {key!r} is registered twice: by {self.owners[key]} and by {owner}")
        self[key] = value
        self.owners[key] = owner

    def decorator(self, *keys: str) -> Callable[[Value], Value]:
        """A decorator registering the function under each of ``keys``, owned by its module.

        Example:
            >>> handlers = Registry("handler")
            >>> @handlers.decorator("neg", "abs")
            ... def f(x): ...
            >>> handlers["abs"] is f, handlers.owners["neg"] == f.__module__
            (True, True)
        """
        def register(function: Value) -> Value:
            for key in keys:
                self.add(key, function, function.__module__)
            return function

        return register


def plugin_modules(package: str, declares: str) -> list[ModuleType]:
    """The modules of ``package`` that define ``declares``, imported in name order.

    Name order keeps registration (and so registry iteration) deterministic;
    modules without ``declares`` (shared helpers such as ``base``) are skipped.

    Example:
        >>> [m.__name__ for m in plugin_modules("topology.optimize", "REWRITE")][:2]
        ['topology.optimize.drop_identity', 'topology.optimize.fold_batchnorm']
    """
    found = []
    for info in sorted(pkgutil.iter_modules(importlib.import_module(package).__path__), key=lambda i: i.name):
        if info.ispkg:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        if hasattr(module, declares):
            found.append(module)
    return found
