"""Static slices and splits of non-batch axes -> Reshape + Cropping2D (+ ZeroPadding2D).

``x[:, -1]``, ``x[:, 1:4]``, ``x[..., :2]``, ``x[:, ::2]`` and ``jnp.split``
are exact copies at any rank, one axis at a time (``topology/ops/ranges.py``).
"""
from __future__ import annotations

from typing import Any

from topology.layers.base import Case
from topology.ops import handles
from topology.ops.ranges import take_range
from topology.trace_kit.builder import Builder
from topology.trace_kit.errors import unsupported
from topology.trace_kit.values import Tensor


@handles("slice")
def slice_(builder: Builder, eqn: Any, values: list, where: str) -> Tensor:
    """``lax.slice`` (``x[:, -1]``, ``x[:, 1:4]``, ``x[..., ::2]``), one axis at a time.

    Example:
        >>> slice_(builder, eqn, [x], "model.py:12")   # doctest: +SKIP
    """
    x = builder.tensor(values[0], where)
    starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * len(starts)
    if (starts[0], limits[0], strides[0]) != (0, x.shape[0], 1):
        raise unsupported("a slice of the batch axis", where, "slice only the other axes, e.g. x[:, -1]")
    for axis in range(1, len(starts)):
        x = take_range(builder, x, axis, int(starts[axis]), int(limits[axis]), int(strides[axis]))
    return x


@handles("split")
def split(builder: Builder, eqn: Any, values: list, where: str) -> list[Tensor]:
    """``jnp.split`` / ``lax.split``: one crop per piece.

    Example:
        >>> a, b = split(builder, eqn, [x], "model.py:12")   # doctest: +SKIP
    """
    x = builder.tensor(values[0], where)
    axis = eqn.params["axis"]
    if axis == 0:
        raise unsupported("a split of the batch axis", where, "split another axis")
    pieces, start = [], 0
    for size in eqn.params["sizes"]:
        pieces.append(take_range(builder, x, axis, start, start + int(size)))
        start += int(size)
    return pieces


def _cases():
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class Around(nn.Module):  # Dense -> fn -> Dense, so the slice sits between layers
        fn: Any

        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(self.fn(nn.Dense(4)(x)))

    class OnInput(nn.Module):  # the slice reads the model input itself
        fn: Any

        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(self.fn(x))

    class Glu(nn.Module):  # jnp.split into a gated linear unit
        @nn.compact
        def __call__(self, x):
            a, b = jnp.split(nn.Dense(6)(x), 2, axis=-1)
            return a * jax.nn.sigmoid(b)

    class NnxLast(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.linear(x)[:, -1, :]

    return (
        Case("linen-last-step", lambda: Around(lambda x: x[:, -1, :]), (5, 3)),
        Case("linen-first-step-on-input", lambda: OnInput(lambda x: x[:, 0]), (5, 3)),
        Case("linen-range", lambda: Around(lambda x: x[:, 1:4]), (6, 3)),
        Case("linen-strided", lambda: Around(lambda x: x[:, 1::2]), (8, 3)),
        Case("linen-strided-padded", lambda: Around(lambda x: x[:, ::3]), (7, 3)),
        Case("linen-features", lambda: Around(lambda x: x[..., 1:3]), (5, 3)),
        Case("linen-image-crop", lambda: OnInput(lambda x: x[:, 1:4, 2:5, :2].reshape(x.shape[0], -1)), (6, 6, 3)),
        Case("linen-split-glu", Glu, (5,)),
        Case("nnx-last-step", NnxLast, (4, 3)),
    )


CASES = _cases
