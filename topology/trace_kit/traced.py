"""What tracing a module produces: the jaxpr of one inference call and the layer calls marked in it.

The capture (``topology/trace/capture.py``) makes a :class:`Trace`; the builder walks it, and a handler
that walks a body again (``topology/ops/scan.py``: once per step) replaces its calls per step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from topology.graph import InputSpec
from topology.vocabulary.tensors import TensorRef, TreePath

if TYPE_CHECKING:
    from topology.layers.base import LayerKind


@dataclass
class LayerCall:
    """One marked call of a layer module."""

    index: int
    kind: LayerKind
    path: TreePath  # the module's path, e.g. ("Block_0", "Conv_0")
    attrs: dict
    variables: dict[tuple[str, str], TensorRef] = field(default_factory=dict)
    line: str = ""  # the user's file:line of the call, for messages


@dataclass
class Trace:
    """The jaxpr of one inference call and the layer calls marked in it."""

    jaxpr: Any  # jax.extend.core.ClosedJaxpr
    calls: dict[int, LayerCall]
    inputs: list[InputSpec]
    param_refs: list = field(default_factory=list)  # TensorRef (or None) per variable input, in jaxpr order
