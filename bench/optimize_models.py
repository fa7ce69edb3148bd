"""The models of the ``optimize`` benchmark section, as model code the CLI traces (``--module``).

    python -m writer ckpt.msgpack out --module bench/optimize_models.py:BNCNN --input-shape 32,32,3
    python -m writer ckpt.msgpack out --module bench/optimize_models.py:ResNet18 --input-shape 64,64,3

``BNCNN``: a small BatchNorm CNN (two conv-BN-relu pairs per stage, average pooling, dropout,
global average pooling, dense head); bench/keras_bn_cnn.py builds its Keras twin.
``ResNet18``: the Flax ImageNet example's ``ResNet18`` (flax/examples/imagenet/models.py,
copied: the example is not part of the flax package), 1000 classes.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any


class BNCNN(nn.Module):
    """Conv-BN-relu x2, avg pool, Conv-BN-relu x2, avg pool, dropout, global mean, Dense(10)."""

    classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        for stage, features in enumerate((32, 64)):
            for i in range(2):
                x = nn.Conv(features, (3, 3), use_bias=False, name=f"conv{stage}_{i}")(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"bn{stage}_{i}")(x)
                x = nn.relu(x)
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.Dropout(0.25, deterministic=not train)(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.classes, name="head")(x)


# --- flax/examples/imagenet/models.py (Apache-2.0), unchanged but for the defaults noted ----------
class ResNetBlock(nn.Module):
    """ResNet block."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)

        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)

        return self.act(residual + y)


class ResNet(nn.Module):
    """ResNetV1.5."""

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int
    num_filters: int = 64
    dtype: Any = jnp.float32
    act: Callable = nn.relu
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x, train: bool = False):  # the example defaults to train=True
        conv = partial(self.conv, use_bias=False, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                       axis_name="batch")

        x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
        x = norm(name="bn_init")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = self.block_cls(self.num_filters * 2**i, strides=strides, conv=conv, norm=norm, act=self.act)(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype)(x)
        x = jnp.asarray(x, self.dtype)
        return x


ResNet18 = partial(ResNet, stage_sizes=[2, 2, 2, 2], block_cls=ResNetBlock, num_classes=1000)
