"""The registry of layer kinds: one module per kind, each exporting ``KIND``.

Adding a layer kind = adding one module here (plus its test cases) and its name
to ``_MODULES``.
"""
from __future__ import annotations

import importlib

from topology.layers.base import LayerKind

_MODULES = ("dense", "conv", "pooling", "flatten")

REGISTRY: dict[str, LayerKind] = {}
for _module in _MODULES:
    _kind = importlib.import_module(f"topology.layers.{_module}").KIND
    REGISTRY[_kind.key] = _kind


def kind(key: str) -> LayerKind:
    """The registered layer kind called ``key``.

    Example:
        >>> kind("conv").flax_modules
        ('nn.Conv', 'nnx.Conv')
    """
    return REGISTRY[key]
