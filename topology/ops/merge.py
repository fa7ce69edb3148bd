"""Two or more different tensors combined element-wise, or concatenated.

``add``/``mul``/``max``/``min`` of two different tensors map to
Add/Multiply/Maximum/Minimum (the element-wise handler, ``activations.py``);
``concatenate`` maps to Concatenate here, a constant among its operands (a cls
token) read off the others (``builder.as_tensors``).
"""
from __future__ import annotations

from typing import Any

from topology.layers.base import Case
from topology.ops import handles
from topology.trace_kit.builder import Builder
from topology.trace_kit.errors import unsupported
from topology.trace_kit.values import Tensor


@handles("concatenate")
def concatenate(builder: Builder, eqn: Any, values: list, where: str) -> Tensor:
    axis = eqn.params["dimension"]
    if axis == 0:
        raise unsupported("concatenation along the batch axis", where, "concatenate along a feature axis")
    tensors = builder.as_tensors(values, where)  # a constant (e.g. a cls token) is read off the others
    return builder.add_layer("concatenate", "Concatenate", {"axis": axis}, tensors, tuple(eqn.outvars[0].aval.shape))


@handles("stack")
def stack(builder: Builder, eqn: Any, values: list, where: str) -> Tensor:
    """``jnp.stack`` (a primitive since JAX 0.10): each operand gets a size-1 axis (Reshape), then
    Concatenate; exact copies. With a following reshape this is RoFormer's rotary interleave
    ``stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)``.

    Example:
        >>> pairs = stack(builder, eqn, [a, b], "model.py:8")   # doctest: +SKIP
    """
    axis = eqn.params["axis"]
    if axis == 0:
        raise unsupported("stacking along the batch axis", where, "stack along a feature axis")
    tensors = builder.as_tensors(values, where)
    shape = tuple(eqn.outvars[0].aval.shape)
    one = (*shape[:axis], 1, *shape[axis + 1:])
    expanded = [builder.add_layer("stack_expand", "Reshape", {"target_shape": list(one[1:])}, [t], one, dtype=t.dtype)
                for t in tensors]
    return builder.add_layer("stack", "Concatenate", {"axis": axis}, expanded, shape, dtype=tensors[0].dtype)


def _cases():
    """Residual adds, subtract, multiply, maximum/minimum, concatenation; Linen, NNX, two inputs."""
    import flax.linen as nn
    import jax.numpy as jnp
    from flax import nnx

    class Two(nn.Module):  # fn(Dense_a(x), Dense_b(x))
        fn: Any

        @nn.compact
        def __call__(self, x):
            return self.fn(nn.Dense(4)(x), nn.Dense(4)(x))

    class Residual(nn.Module):
        @nn.compact
        def __call__(self, x):
            y = nn.Dense(6)(nn.relu(nn.Dense(8)(x)))
            return nn.relu(x + y)

    class ConvResidual(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x + nn.Conv(3, (3, 3))(nn.relu(nn.Conv(3, (3, 3))(x)))

    class ThreeWay(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x) + nn.Dense(3)(x) + nn.Dense(3)(x)

    class Sequence(nn.Module):  # concatenation along the length axis of (batch, length, channels)
        @nn.compact
        def __call__(self, x):
            return jnp.concatenate([x, nn.Dense(3)(x)], axis=1)

    class SqueezeExcite(nn.Module):  # x * gate with shape (batch, 1, 1, C): a broadcasting multiply
        @nn.compact
        def __call__(self, x):
            gate = nn.sigmoid(nn.Dense(4)(jnp.mean(x, axis=(1, 2), keepdims=True)))
            return nn.Conv(4, (1, 1))(x) * gate

    class TwoInputs(nn.Module):
        @nn.compact
        def __call__(self, a, b):
            return nn.Dense(2)(jnp.concatenate([nn.relu(nn.Dense(5)(a)), b], axis=-1))

    class Rotary(nn.Module):  # transformers' FlaxRoFormerSelfAttention rotate_half: an interleave
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(6)(x)
            rotated = jnp.stack([-h[..., 1::2], h[..., ::2]], axis=-1).reshape(h.shape)
            return nn.Dense(3)(h * 0.5 + rotated)

    class NnxStack(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))

        def __call__(self, x):
            h = self.linear(x)
            return jnp.stack([h, nnx.relu(h), h * 2.0], axis=1).reshape(x.shape[0], -1)

    class NnxResidual(nnx.Module):
        def __init__(self):
            self.first = nnx.Linear(6, 6, rngs=nnx.Rngs(0))
            self.second = nnx.Linear(6, 6, rngs=nnx.Rngs(1))

        def __call__(self, x):
            return x + self.second(nnx.relu(self.first(x))) - self.first(x)

    return (
        Case("linen-residual-add", Residual, (6,)),
        Case("linen-conv-residual-add", ConvResidual, (6, 6, 3)),
        Case("linen-add-three", ThreeWay, (5,)),
        Case("linen-subtract", lambda: Two(lambda a, b: a - b), (5,)),
        Case("linen-multiply", lambda: Two(lambda a, b: a * nn.sigmoid(b)), (5,)),
        Case("linen-maximum", lambda: Two(jnp.maximum), (5,)),
        Case("linen-minimum", lambda: Two(jnp.minimum), (5,)),
        Case("linen-average", lambda: Two(lambda a, b: (a + b) / 2), (5,)),
        Case("linen-concatenate-last", lambda: Two(lambda a, b: jnp.concatenate([a, b], axis=-1)), (5,)),
        Case("linen-concatenate-axis1", Sequence, (4, 3)),
        Case("linen-squeeze-excite-broadcast", SqueezeExcite, (5, 5, 4)),
        Case("linen-two-inputs-concatenate", TwoInputs, [(4,), (3,)]),
        Case("nnx-residual-add-subtract", NnxResidual, (6,)),
        Case("linen-stack-interleave-rotary", Rotary, (4, 3)),
        Case("nnx-stack-middle-axis", NnxStack, (3,)),
    )


CASES = _cases
