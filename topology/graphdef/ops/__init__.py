"""Handlers mapping JAX primitives to TF ops, one module per primitive family.

A handler takes ``(builder, eqn, values)`` (a :class:`topology.graphdef.nodes.GraphBuilder`, the
jaxpr equation, the :class:`~topology.graphdef.nodes.Value` of each input) and returns the
Value (or list of Values) of the equation's outputs. Register with :func:`handles`; a primitive
handled twice is refused. A family module declares its test ``CASES`` (:class:`GraphCase`), run
in real TF.js against JAX by ``tests/test_graph_model_ops.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

from topology.registry import Registry, plugin_modules

Handler = Callable[..., Any]
HANDLERS: Registry[Handler] = Registry("graph handler for primitive")


@dataclass(frozen=True)
class GraphCase:
    """One test of a family: a JAX function of batched inputs (shapes without the batch axis).

    Example:
        >>> GraphCase("relu", lambda x: x, [((3,), "float32")]).inputs[0][1]
        'float32'
    """

    name: str
    fn: Callable[..., Any]
    inputs: list[tuple[tuple[int, ...], str]]
    primitives: tuple[str, ...] = ()  # what the case exercises (documentation and the coverage test)
    tolerance: float = 1e-4
    int_range: tuple[int, int] = field(default=(0, 5))  # values of int32 inputs


def handles(*primitives: str) -> Callable[[Handler], Handler]:
    """Register the decorated function for the named JAX primitives (ValueError if one is taken).

    Example:
        >>> @handles("my_graph_prim")
        ... def f(builder, eqn, values): ...
        >>> HANDLERS.pop("my_graph_prim") is f
        True
    """
    return HANDLERS.decorator(*primitives)


_families: dict[str, ModuleType] = {}


def families() -> dict[str, ModuleType]:
    """The families by name, in name order; importing them registers the handlers.

    Example:
        >>> "elementwise" in families()
        True
    """
    if not _families:
        for module in plugin_modules(__name__, "CASES"):
            _families[module.__name__.rpartition(".")[2]] = module
    return _families


def handler_for(eqn: Any) -> Handler | None:
    """The handler for ``eqn``'s primitive, if any."""
    families()
    return HANDLERS.get(eqn.primitive.name)


def supported_primitives() -> dict[str, str]:
    """Every primitive with a handler -> its family (the table in docs/graph-model.md).

    Example:
        >>> supported_primitives()["dot_general"]
        'linalg'
    """
    families()
    return {name: HANDLERS.owners[name].rpartition(".")[2] for name in sorted(HANDLERS)}


def primitives_table() -> str:
    """The supported-primitives table of docs/graph-model.md, one row per family (a test keeps the doc current).

    Example:
        >>> primitives_table().splitlines()[0]
        '| family | JAX primitives | test cases |'
    """
    rows = ["| family | JAX primitives | test cases |", "|---|---|---|"]
    by_family: dict[str, list[str]] = {}
    for primitive, family in supported_primitives().items():
        by_family.setdefault(family, []).append(primitive)
    for family, module in families().items():
        names = ", ".join(f"`{p}`" for p in by_family.get(family, []))
        rows.append(f"| {family} | {names} | {len(module.CASES)} |")
    return "\n".join(rows)
