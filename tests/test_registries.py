"""The plugin registries find their modules by listing the package and refuse a key registered twice."""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import pytest

import topology.layers as layers_pkg
import topology.ops as ops_pkg
from topology.layers import REGISTRY, register
from topology.ops import HANDLERS, families, handles
from topology.optimize import ORDER
from topology.optimize.affine import fold_targets
from topology.optimize import REGISTRY as REWRITES
from topology.registry import Registry


def _modules(package) -> set[str]:
    return {m.name for m in pkgutil.iter_modules(package.__path__)}


def test_every_module_defining_kind_is_registered_in_name_order():
    owners = [REGISTRY.owners[key] for key in REGISTRY]
    assert owners == sorted(owners)
    declaring = {name for name in _modules(layers_pkg)
                 if hasattr(importlib.import_module(f"topology.layers.{name}"), "KIND")}
    assert {owner.rpartition(".")[2] for owner in owners} == declaring
    assert "base" not in {owner.rpartition(".")[2] for owner in owners}


def test_a_second_layer_kind_with_a_taken_key_is_refused():
    before = dict(REGISTRY)
    with pytest.raises(ValueError, match="layer kind 'conv' is registered twice: by topology.layers.conv and by my.plugin"):
        register(REGISTRY["conv"], "my.plugin")
    assert REGISTRY == before


def test_op_families_are_the_modules_declaring_cases():
    found = families()
    assert list(found) == sorted(found)
    assert set(found) <= _modules(ops_pkg) and {"activations", "slicing", "scan"} <= set(found)
    assert all(callable(module.CASES) for module in found.values())


def test_a_primitive_handled_twice_is_refused():
    families()
    owner = HANDLERS.owners["reshape"]
    with pytest.raises(ValueError, match=f"handler for primitive 'reshape' is registered twice: by {owner} and by "):
        handles("reshape")(lambda builder, eqn, values, where: None)
    assert HANDLERS["reshape"].__module__ == owner


def test_rewrites_run_in_the_explicit_order_and_it_names_every_rewrite_module():
    assert tuple(REWRITES) == ORDER


def test_registry_names_both_owners():
    registry = Registry("thing")
    registry.add("a", 1, "first.module")
    with pytest.raises(ValueError, match="thing 'a' is registered twice: by first.module and by second.module"):
        registry.add("a", 2, "second.module")
    assert registry == {"a": 1}


def test_fold_targets_and_side_keywords_are_declared_by_the_layer_kinds():
    # The engine holds no table of its own: what --optimize folds into and which call keywords the
    # tracer marks come from the kinds' declarations.
    targets = fold_targets()
    assert {cls: (t.kernel, t.channel_axes, targets.owners[cls]) for cls, t in targets.items()} == {
        "Conv1D": ("kernel", 1, "conv"), "Conv2D": ("kernel", 1, "conv"), "Conv3D": ("kernel", 1, "conv"),
        "DepthwiseConv2D": ("depthwise_kernel", 2, "conv"), "Dense": ("kernel", 1, "dense")}
    assert {key: k.side_keywords for key, k in REGISTRY.items() if k.side_keywords} == {
        "attention": ("mask",), "rnn": ("seq_lengths",)}


def test_a_keras_class_declared_as_fold_target_by_two_kinds_is_refused():
    plugin = dataclasses.replace(REGISTRY["dense"], key="my_dense")
    register(plugin, "my.plugin")
    try:
        with pytest.raises(ValueError, match="fold target 'Dense' is registered twice: by dense and by my_dense"):
            fold_targets()
    finally:
        REGISTRY.pop("my_dense")
        REGISTRY.owners.pop("my_dense")
