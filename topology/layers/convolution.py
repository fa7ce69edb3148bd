"""What ``conv`` and ``conv_transpose`` share: per-axis attributes, explicit padding pairs and the bias.

Example:
    >>> per_axis(2, 3), padding_pairs(1, 2)
    ((2, 2, 2), [(1, 1), (1, 1)])
"""
from __future__ import annotations

from typing import Any

from topology.graph import WeightBinding
from topology.vocabulary.tensors import TensorRef


def per_axis(value: Any, ndim: int) -> tuple[int, ...]:
    """A Flax per-axis attribute (None, one int, or one per axis) as ``ndim`` ints.

    Example:
        >>> per_axis(None, 2), per_axis(3, 2), per_axis([1, 2], 2)
        ((1, 1), (3, 3), (1, 2))
    """
    if value is None:
        return (1,) * ndim
    if isinstance(value, int):
        return (value,) * ndim
    return tuple(int(v) for v in value)


def padding_pairs(padding: Any, ndim: int) -> list[tuple[int, int]]:
    """Explicit Flax padding (one int, or an int or a (low, high) pair per axis) as (low, high) pairs.

    Example:
        >>> padding_pairs([1, (0, 2)], 2)
        [(1, 1), (0, 2)]
    """
    if isinstance(padding, int):
        padding = [padding] * ndim
    return [(p, p) if isinstance(p, int) else tuple(int(v) for v in p) for p in padding]


def bias_variable(variables: dict, origin: str, use_bias: bool | None = None) -> TensorRef | None:
    """The layer's ``params/bias``: None when ``use_bias`` is False (or, with None, when absent).

    Example:
        >>> bias_variable({}, "Conv_0") is None
        True
        >>> bias_variable({}, "Conv_0", use_bias=True)
        Traceback (most recent call last):
        KeyError: 'params/Conv_0/bias'
    """
    if use_bias is False:
        return None
    bias = variables.get(("params", "bias"))
    if use_bias and bias is None:
        raise KeyError(f"params/{origin}/bias")
    return bias


def bias_weight(bias: TensorRef) -> WeightBinding:
    """The tfjs ``bias`` weight, Flax's bias as it is.

    Example:
        >>> import numpy as np
        >>> bias_weight(TensorRef(("params", "bias"), (4,), np.dtype("float32"), None)).shape
        (4,)
    """
    return WeightBinding("bias", tuple(bias.shape), bias)
