"""What op handlers and layer helpers may use of the graph builder (:class:`Builder`).

The concrete builder is :class:`topology.trace.build.GraphBuilder`; handlers in
``topology/ops`` are typed against this protocol so that they need neither the
builder's module nor each other at import time.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from topology.graph import LayerNode, WeightBinding
from topology.trace_kit.merged_batch import MergedBatch
from topology.trace_kit.traced import Trace
from topology.trace_kit.values import Const, Pending, Tensor


@runtime_checkable
class Builder(Protocol):
    """The graph being built while a jaxpr is walked.

    Example:
        >>> from topology.trace.build import GraphBuilder
        >>> isinstance(GraphBuilder(trace=None), Builder)   # structural: any object with these members
        True
    """

    trace: Trace  # the traced jaxpr and its marked layer calls (scan replaces calls per step)
    layers: list[LayerNode]  # the layers so far, in order
    call_inputs: dict[int, list[Tensor]]  # layer call index -> the tensors entering it
    merged: MergedBatch  # layer outputs whose batch axis the trace merged with others (OPT's (B*S, H))

    def add_layer(self, op: str, class_name: str, config: dict, inputs: list[Tensor], shape: tuple[int, ...],
                  weights: list[WeightBinding] | None = None, origin: str = "", dtype: Any = np.float32) -> Tensor:
        """Append one layer named after ``op`` and return its output tensor (``shape`` includes batch)."""

    def tensor(self, value: Any, where: str = "") -> Tensor:
        """The value as a layer output, identifying a pending function first."""

    def constant_tensor(self, const: Const, carrier: Tensor, where: str) -> Tensor:
        """``const`` (traced shape (batch, *S)) as a layer output, read off one element of ``carrier``
        (each constant once: ``topology/trace/constant_tensors.py``)."""

    def as_tensors(self, values: list, where: str) -> list[Tensor]:
        """Every value as a tensor; constants are read off the first activation among them."""

    def walk(self, jaxpr: Any, env: dict, outer_where: str = "") -> None:
        """Walk the equations of ``jaxpr`` with ``env`` (jaxpr variable -> value), adding layers."""

    def read(self, env: dict, var: Any) -> Any:
        """The value of ``var`` in ``env`` (a literal becomes a constant)."""


class Deferred:
    """A value a handler keeps until its use shows which layers it needs (pooling's window sum:
    an average pool once divided by its window size, else sum pooling)."""

    def finish(self, builder: Builder, eqn: Any, values: list, where: str) -> Tensor | None:
        """The layers for element-wise ``eqn`` on ``values`` (this value among them), or None."""
        raise NotImplementedError

    def as_pending(self, builder: Builder) -> Pending:
        """This value used as it is, as a function of a layer output."""
        raise NotImplementedError
