"""Constants as layer outputs: how the builder gives a constant array or parameter a place in the graph.

tfjs 4.22 has no constant layer, and every layer needs a batch. So a constant C
(one value per example, shape S) is read off an activation it meets: one element
of that activation (Flatten, crop) goes through a Dense with a zero kernel and
bias C, which gives ``0 * x + C = C`` exactly for every finite x; a Reshape
restores S. Add, Multiply, Maximum, Minimum and Concatenate then take it as any
other tensor. So ``x + pe[:, :L]`` (a fixed table), ``x + self.pos_embedding``
(a learned Param), ``concatenate([cls_token, patches])`` and
``nn.Embed(...)(jnp.arange(L))`` (the embedding of a constant is a constant: the
table's first L rows) all convert. A Param is read lazily from the checkpoint
(:class:`topology.trace_kit.values.Lazy`), like a layer's weights. If the
activation holds inf or NaN, the constant becomes NaN (0 * inf is NaN); such
outputs are inf or NaN in JAX too.

Handlers reach this through the builder (``builder.constant_tensor``, ``builder.as_tensors``); the
tensors made so far are the builder's state, kept here.
"""
from __future__ import annotations

import math

import numpy as np

from topology.graph import WeightBinding
from topology.layers.dense import dense_config
from topology.ops.ranges import take_range
from topology.trace_kit.builder import Builder
from topology.trace_kit.errors import unsupported
from topology.trace_kit.values import Const, Tensor, one_example
from topology.vocabulary.tensors import TensorRef


class ConstantTensors:
    """The constants of one graph made tensors, each once, read off one element per carrier activation.

    Example:
        >>> pe = ConstantTensors(builder).tensor(Const(table), x, "model.py:9")   # doctest: +SKIP
    """

    def __init__(self, builder: Builder):
        self.builder = builder
        self.made: dict[int, tuple[Const, Tensor]] = {}  # id(constant) -> (the constant, kept alive; its tensor)
        self.carriers: dict[str, Tensor] = {}  # activation layer -> the one element constants are read off

    def tensor(self, const: Const, carrier: Tensor, where: str) -> Tensor:
        """``const`` (traced shape (batch, *S)) as a layer output, read off one element of ``carrier``."""
        builder = self.builder
        cache = self.made
        if id(const) in cache:
            return cache[id(const)][1]
        shape = _shape(const)
        if len(shape) < 2 or shape[0] not in (1, carrier.shape[0]):
            raise unsupported(f"a constant of shape {shape} used with activations of shape {carrier.shape}", where,
                              "give the constant the activations' batch axis, e.g. table[None, :L] broadcast to x")
        if carrier.dtype.kind != "f":
            raise unsupported("a constant combined with an integer tensor", where,
                              "combine constants with float activations (e.g. after an nn.Embed)")
        origin = const.lazy.origin if const.lazy is not None else "constant"
        if const.lazy is not None:
            loader = lambda lazy=const.lazy: one_example(lazy.compute(), origin).astype(np.float32).ravel()  # noqa: E731
        else:
            value = one_example(const.value, "array").astype(np.float32).ravel()
            loader = lambda value=value: value  # noqa: E731
        batch, features = carrier.shape[0], shape[1:]
        units = math.prod(features)
        ones = self.carriers
        if carrier.layer not in ones:  # one element per example of the carrier, shared by its constants
            flat = carrier
            if len(carrier.shape) != 2:
                flat = builder.add_layer("constant_flatten", "Flatten", {"data_format": "channels_last"}, [carrier],
                                         (batch, math.prod(carrier.shape[1:])))
            ones[carrier.layer] = take_range(builder, flat, 1, 0, 1)
        one = ones[carrier.layer]
        weights = [WeightBinding("kernel", (1, units), constant=np.zeros((1, units), np.float32)),
                   WeightBinding("bias", (units,), TensorRef(("constant", origin), (units,), np.dtype("float32"),
                                                             loader, "computed from the checkpoint"))]
        out = builder.add_layer("constant", "Dense", dense_config(units), [one], (batch, units), weights,
                                origin=f"constant {origin}")
        if len(features) != 1:
            out = builder.add_layer("constant_reshape", "Reshape", {"target_shape": list(features)}, [out],
                                    (batch, *features))
        cache[id(const)] = (const, out)  # keep const alive so that its id stays unique
        return out

    def as_tensors(self, values: list, where: str) -> list[Tensor]:
        """Every value as a tensor; constants are read off the first activation among them."""
        builder = self.builder
        carrier = next((builder.tensor(v, where) for v in values if not isinstance(v, Const)), None)
        if carrier is None:
            raise unsupported("an operation on constants only", where, "compute it inside a layer")
        return [self.tensor(v, carrier, where) if isinstance(v, Const) else builder.tensor(v, where) for v in values]


def _shape(const: Const) -> tuple[int, ...]:
    return tuple(const.lazy.shape if const.lazy is not None else np.shape(const.value))
