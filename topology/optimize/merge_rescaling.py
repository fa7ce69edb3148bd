"""Merge consecutive ``Rescaling`` layers into one.

``(x * s1 + o1) * s2 + o2 == x * (s1 s2) + (o1 s2 + o2)``; the merged
constants are computed in float64 (tfjs rounds them to float32 once, instead
of rounding two products and two sums).
"""
from __future__ import annotations

from topology.graph import LayerGraph
from topology.layers.base import Case
from topology.optimize.base import Rewrite, bypass, consumers, record, sole_reader

KEY = "merge_rescaling"


def apply(graph: LayerGraph) -> list[dict]:
    applied = []
    for first in list(graph.layers):
        if first.class_name != "Rescaling" or first not in graph.layers:
            continue
        readers = consumers(graph, first.name)
        if len(readers) != 1 or readers[0].class_name != "Rescaling" or not sole_reader(graph, first.name, readers[0]):
            continue
        second = readers[0]
        s1, o1 = float(first.config.get("scale", 1.0)), float(first.config.get("offset", 0.0))
        s2, o2 = float(second.config.get("scale", 1.0)), float(second.config.get("offset", 0.0))
        # `second` keeps its name (it may be a model output); it now reads `first`'s input.
        second.config = {**second.config, "scale": s1 * s2, "offset": o1 * s2 + o2}
        if bypass(graph, first, first.inputs[0]):
            applied.append(record(KEY, first.name, second.name, scale=s1 * s2, offset=o1 * s2 + o2))
        else:  # cannot happen for a single reader with one input, but never leave a half edit
            second.config = {**second.config, "scale": s2, "offset": o2}
    return applied


def _cases():
    import flax.linen as nn

    class SubtractLogSigmoid(nn.Module):  # log_sigmoid ends in Rescaling(-1), the subtraction negates it again
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.Dense(5)(x) - nn.log_sigmoid(nn.Dense(5)(x)))

    class SubtractNegated(nn.Module):  # a - (-b): two Rescaling(-1) in a row, merged to the identity, dropped
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4)(x) - (-nn.Dense(4)(x) * 2.0)

    return (Case("linen-subtract-log-sigmoid", SubtractLogSigmoid, (4,)),
            Case("linen-subtract-scaled-negation", SubtractNegated, (4,)))


REWRITE = Rewrite(KEY, "merge consecutive Rescaling layers into one", apply, _cases)
