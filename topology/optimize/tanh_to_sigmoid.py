"""``Rescaling(a, b) -> tanh -> Rescaling(0.5, 0.5)`` becomes ``Rescaling(2a, 2b) -> sigmoid``.

``0.5 tanh(z) + 0.5 == sigmoid(2 z)`` exactly (tanh(z) = 2 sigmoid(2z) - 1).
This is the tail of the tanh-approximate GELU the tracer composes from layers
(tfjs' ``gelu`` is the erf form, so the chain itself cannot become one layer):
``x * (0.5 + 0.5 tanh(c (x + 0.044715 x^3)))`` loses one of its layers.
"""
from __future__ import annotations

from topology.graph import LayerGraph
from topology.layers.base import Case
from topology.optimize.base import Rewrite, bypass, consumers, find, record, sole_reader

KEY = "tanh_to_sigmoid"


def apply(graph: LayerGraph) -> list[dict]:
    applied = []
    for tanh in list(graph.layers):
        if tanh.class_name != "Activation" or tanh.config.get("activation") != "tanh" or len(tanh.inputs) != 1:
            continue
        pre = find(graph, tanh.inputs[0])
        readers = consumers(graph, tanh.name)
        if pre is None or pre.class_name != "Rescaling" or not sole_reader(graph, pre.name, tanh) or len(readers) != 1:
            continue
        post = readers[0]
        if post.class_name != "Rescaling" or not sole_reader(graph, tanh.name, post) or \
                float(post.config.get("scale", 1.0)) != 0.5 or float(post.config.get("offset", 0.0)) != 0.5:
            continue
        if not bypass(graph, post, tanh.name):
            continue
        scale, offset = 2 * float(pre.config.get("scale", 1.0)), 2 * float(pre.config.get("offset", 0.0))
        pre.config = {**pre.config, "scale": scale, "offset": offset}
        tanh.config = {**tanh.config, "activation": "sigmoid"}
        applied.append(record(KEY, post.name, tanh.name, scale=scale, offset=offset))
    return applied


def _cases():
    import flax.linen as nn
    import jax
    from flax import nnx

    class GeluTanh(nn.Module):  # jax.nn.gelu defaults to the tanh approximation
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(jax.nn.gelu(nn.Dense(6)(x)))

    class NnxGeluTanh(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.linear = nnx.Linear(5, 6, rngs=rngs)

        def __call__(self, x):
            return nnx.gelu(self.linear(x))

    return (Case("linen-gelu-tanh", GeluTanh, (5,), input_range=(-6.0, 6.0)),
            Case("nnx-gelu-tanh", lambda: NnxGeluTanh(nnx.Rngs(0)), (5,), input_range=(-6.0, 6.0)))


REWRITE = Rewrite(KEY, "rewrite 0.5 tanh(z) + 0.5 as sigmoid(2z) (the tail of the tanh-approximate GELU)", apply, _cases)
