"""Small real Flax models the diagnostics corpus breaks in many ways.

Every model is small enough to init, trace and run in TF.js in about a second.
The classes take no required arguments, so ``--module tests/corpus/models.py:Name``
works from the command line too.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx

MLP_INPUT = (20,)
CNN_INPUT = (12, 12, 1)


class MLP(nn.Module):
    """20 -> 16 -> 10, auto names Dense_0, Dense_1."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(10)(x)


class SquareMLP(nn.Module):
    """20 -> 16 -> 16 -> 10: the middle kernel is square, so its layout cannot be read from its shape."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(10)(x)


class SameWidthMLP(nn.Module):
    """16 -> 16 -> 16 -> 16: three layers with the same shape signature."""

    @nn.compact
    def __call__(self, x):
        for _ in range(3):
            x = nn.tanh(nn.Dense(16)(x))
        return x


class NamedMLP(nn.Module):
    """MLP with explicit names (dense_in, dense_out) instead of Flax's automatic ones."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16, name="dense_in")(x))
        return nn.Dense(10, name="dense_out")(x)


class SequentialMLP(nn.Module):
    """Layers in a list attribute: parameters under layers_0, layers_1."""

    def setup(self):
        self.layers = [nn.Dense(16), nn.Dense(10)]

    def __call__(self, x):
        return self.layers[1](nn.relu(self.layers[0](x)))


class CNN(nn.Module):
    """The Flax MNIST example's shape, narrow: conv-relu-avgpool x2, dense-relu, dense."""

    @nn.compact
    def __call__(self, x):
        for width in (4, 8):
            x = nn.relu(nn.Conv(width, (3, 3))(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(10)(x)


class BNMLP(nn.Module):
    """Dense -> BatchNorm -> relu -> Dense: needs batch_stats."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(16)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(10)(nn.relu(x))


class GlobalPoolCNN(nn.Module):
    """VALID 3x3 convs and a global average: any input of at least 5x5 fits the parameters."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(x))
        x = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(3)(x)


class SortingMLP(nn.Module):
    """Sorts its features: an operation TF.js layers cannot express."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(jnp.sort(nn.Dense(8)(x), axis=-1))


class NnxMLP(nnx.Module):
    """An NNX MLP whose layers live in an nnx.List: integer keys layers/0, layers/1."""

    def __init__(self, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.layers = nnx.List([nnx.Linear(20, 16, rngs=rngs), nnx.Linear(16, 10, rngs=rngs)])

    def __call__(self, x):
        return self.layers[1](nnx.relu(self.layers[0](x)))
