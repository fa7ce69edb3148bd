"""Two or more different tensors combined element-wise, or concatenated.

``add``/``mul``/``max``/``min`` map to Add/Multiply/Maximum/Minimum; ``sub``
(tfjs has no Subtract layer) is Add of the first and Rescaling(-1) of the second.
"""
from __future__ import annotations

from typing import Any

from topology.ops import handles
from topology.trace.values import Tensor

_LAYER = {"add": "Add", "mul": "Multiply", "max": "Maximum", "min": "Minimum"}


def merge(builder: Any, eqn: Any, values: list, where: str) -> Tensor:
    from topology.trace.build import unsupported

    name = eqn.primitive.name
    if name not in _LAYER and name != "sub":
        raise unsupported(f"`{name}` of two different tensors", where,
                          "combine tensors with +, -, *, maximum, minimum or concatenate")
    tensors = [builder.tensor(v, where) for v in values]
    shapes = {t.shape for t in tensors}
    if len(tensors) != len(values) or len(shapes) != 1:
        raise unsupported(f"`{name}` of tensors with shapes {[t.shape for t in tensors]} (broadcasting)", where,
                          "combine tensors of the same shape")
    shape = tensors[0].shape
    if name == "sub":
        negated = builder.add_layer("negate", "Rescaling", {"scale": -1.0, "offset": 0.0}, [tensors[1]], shape)
        return builder.add_layer("subtract", "Add", {}, [tensors[0], negated], shape)
    return builder.add_layer(_LAYER[name].lower(), _LAYER[name], {}, tensors, shape)


@handles("concatenate")
def concatenate(builder: Any, eqn: Any, values: list, where: str) -> Tensor:
    from topology.trace.build import unsupported

    axis = eqn.params["dimension"]
    if axis == 0:
        raise unsupported("concatenation along the batch axis", where, "concatenate along a feature axis")
    tensors = [builder.tensor(v, where) for v in values]
    return builder.add_layer("concatenate", "Concatenate", {"axis": axis}, tensors, tuple(eqn.outvars[0].aval.shape))
