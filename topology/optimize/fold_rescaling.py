"""Fold a ``Rescaling`` into the Dense/Conv/DepthwiseConv2D before it.

``layer(x) * s + o`` is the layer with kernel ``W s`` and bias ``b s + o``
(computed in float64, written as float32). Only when the Rescaling is the sole
reader and the layer's activation is linear.
"""
from __future__ import annotations

import numpy as np

from topology.graph import LayerGraph
from topology.layers.base import Case
from topology.optimize.affine import fold_affine, foldable
from topology.optimize.base import Rewrite, bypass, find, record, sole_reader

KEY = "fold_rescaling"


def apply(graph: LayerGraph) -> list[dict]:
    applied = []
    for rescale in list(graph.layers):
        if rescale.class_name != "Rescaling" or len(rescale.inputs) != 1:
            continue
        producer = find(graph, rescale.inputs[0])
        if producer is None or not foldable(producer) or not sole_reader(graph, producer.name, rescale):
            continue
        scale, offset = float(rescale.config.get("scale", 1.0)), float(rescale.config.get("offset", 0.0))
        if not bypass(graph, rescale, producer.name):
            continue
        fold_affine(producer, KEY, {}, lambda src, s=scale, o=offset: (np.float64(s), np.float64(o)))
        applied.append(record(KEY, rescale.name, producer.name, scale=scale, offset=offset))
    return applied


def _cases():
    import flax.linen as nn

    class Scaled(nn.Module):  # Dense -> x * 0.5 + 2 (a Rescaling) -> Dense, and a negated conv in a subtraction
        @nn.compact
        def __call__(self, x):
            y = nn.Conv(3, (3, 3))(x)
            z = nn.Conv(3, (3, 3), use_bias=False)(x)
            y = (y - z).reshape((x.shape[0], -1))
            return nn.Dense(2)(nn.Dense(4)(y) * 0.5 + 2.0)

    return (Case("linen-rescaling-after-dense-and-conv", Scaled, (5, 5, 2)),)


REWRITE = Rewrite(KEY, "fold a Rescaling into the preceding Dense/Conv/DepthwiseConv2D kernel and bias", apply, _cases)
