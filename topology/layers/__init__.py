"""The registry of layer kinds: one module per kind, each exporting ``KIND``.

Adding a layer kind = adding one module here (plus its test cases) and its name
to ``_MODULES``.
"""
from __future__ import annotations

import functools
import importlib

from topology.layers.base import LayerKind

_MODULES = ("dense", "conv", "conv_transpose", "pooling", "flatten",
            "batchnorm", "layernorm", "groupnorm", "embed", "dropout",
            "attention", "rnn")

REGISTRY: dict[str, LayerKind] = {}
for _module in _MODULES:
    _kind = importlib.import_module(f"topology.layers.{_module}").KIND
    REGISTRY[_kind.key] = _kind


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
