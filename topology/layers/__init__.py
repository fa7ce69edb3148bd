"""The registry of layer kinds: one module per kind, each exporting ``KIND``.

Adding a layer kind = adding one module here that defines ``KIND`` (plus its
test cases); it is found by listing this package (modules without ``KIND``,
such as ``base``, are helpers). Two kinds with one key are refused.
"""
from __future__ import annotations

import functools
import importlib

from topology.layers.base import LayerKind
from topology.registry import Registry, plugin_modules

REGISTRY: Registry[LayerKind] = Registry("layer kind")


def register(layer_kind: LayerKind, owner: str) -> None:
    """Add ``layer_kind`` to :data:`REGISTRY`; ValueError when its key is already taken.

    Example:
        >>> register(kind("dense"), "my.plugin")
        Traceback (most recent call last):
        ValueError: layer kind 'dense' is registered twice: by topology.layers.dense and by my.plugin
    """
    REGISTRY.add(layer_kind.key, layer_kind, owner)


# Name order: kind_for_module takes the first kind whose classes match (no two kinds share a class).
for _module in plugin_modules(__name__, "KIND"):
    register(_module.KIND, _module.__name__)


def kind_for_module(module: object) -> LayerKind | None:
    """The layer kind that traces ``module`` (a Linen or NNX module instance), if any.

    Example:
        >>> import flax.linen as nn
        >>> kind_for_module(nn.Dense(3)).key
        'dense'
    """
    for layer_kind in REGISTRY.values():
        for spec in layer_kind.flax_classes:
            if isinstance(module, _resolve(spec)):
                return layer_kind
    return None


@functools.lru_cache(maxsize=None)
def _resolve(spec: str) -> type:
    module_name, _, class_name = spec.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def kind(key: str) -> LayerKind:
    """The registered layer kind called ``key``.

    Example:
        >>> kind("conv").flax_modules
        ('nn.Conv', 'nnx.Conv')
    """
    return REGISTRY[key]
