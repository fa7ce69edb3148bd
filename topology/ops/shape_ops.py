"""Reshapes and transposes that keep the batch axis: Flatten, Reshape, Permute."""
from __future__ import annotations

import math
from typing import Any

from topology.ops import handles
from topology.trace.values import Tensor


@handles("reshape", "squeeze", "expand_dims")
def reshape(builder: Any, eqn: Any, values: list, where: str) -> Tensor:
    from topology.trace.build import unsupported

    x = builder.tensor(values[0], where)
    shape = tuple(eqn.outvars[0].aval.shape)
    if eqn.params.get("dimensions") is not None:
        raise unsupported("a reshape with a dimension order", where, "transpose first, then reshape")
    if not shape or shape[0] != x.shape[0] or math.prod(shape[1:]) != math.prod(x.shape[1:]):
        raise unsupported(f"a reshape from {x.shape} to {shape} that mixes the batch axis", where,
                          "keep the batch axis first, e.g. x.reshape((x.shape[0], -1))")
    if shape == x.shape:
        return x
    if len(shape) == 2:
        return builder.add_layer("flatten", "Flatten", {"data_format": "channels_last"}, [x], shape)
    return builder.add_layer("reshape", "Reshape", {"target_shape": list(shape[1:])}, [x], shape)


@handles("transpose")
def transpose(builder: Any, eqn: Any, values: list, where: str) -> Tensor:
    from topology.trace.build import unsupported

    x = builder.tensor(values[0], where)
    permutation = tuple(eqn.params["permutation"])
    if permutation[0] != 0:
        raise unsupported(f"a transpose {permutation} that moves the batch axis", where, "keep axis 0 in place")
    if permutation == tuple(range(len(permutation))):
        return x
    return builder.add_layer("permute", "Permute", {"dims": list(permutation[1:])}, [x],
                             tuple(eqn.outvars[0].aval.shape))
