"""A small ResNet with the standard stem, in the style of HuggingFace's FlaxResNetModel (Linen).

Stem: 7x7 stride-2 convolution (padding 3), BatchNorm, relu, then a 3x3 stride-2
max pool with padding 1 (``nn.max_pool(..., padding=((1, 1), (1, 1)))``). Then
two basic blocks (the second with a stride-2 projection shortcut), global average
pooling and a classifier. Inputs are normalized per channel with the ImageNet
mean and std inside the model, as flaxmodels' ResNet does.

Convert a checkpoint of it (``{"params": ..., "batch_stats": ...}``) with::

    python -m writer resnet.msgpack out/ --module examples/models/resnet.py:ResNet --input-shape 32,32,3
"""
from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvLayer(nn.Module):
    out_channels: int
    kernel_size: int = 3
    stride: int = 1
    activation: bool = True

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        pad = self.kernel_size // 2
        x = nn.Conv(self.out_channels, (self.kernel_size,) * 2, strides=self.stride, padding=((pad, pad), (pad, pad)),
                    use_bias=False, name="convolution")(x)
        x = nn.BatchNorm(use_running_average=deterministic, momentum=0.9, epsilon=1e-5, name="normalization")(x)
        return nn.relu(x) if self.activation else x


class BasicLayer(nn.Module):
    out_channels: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        residual = x
        if x.shape[-1] != self.out_channels or self.stride != 1:
            residual = ConvLayer(self.out_channels, 1, self.stride, activation=False, name="shortcut")(x, deterministic)
        x = ConvLayer(self.out_channels, 3, self.stride, name="layer_0")(x, deterministic)
        x = ConvLayer(self.out_channels, 3, 1, activation=False, name="layer_1")(x, deterministic)
        return nn.relu(x + residual)


class ResNet(nn.Module):
    num_labels: int = 10
    embedding_size: int = 16

    @nn.compact
    def __call__(self, pixel_values, deterministic: bool = True):
        x = (pixel_values - jnp.array(IMAGENET_MEAN)) / jnp.array(IMAGENET_STD)
        x = ConvLayer(self.embedding_size, 7, 2, name="embedder")(x, deterministic)
        pool = partial(nn.max_pool, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        x = pool(x)
        x = BasicLayer(16, 1, name="stage_0")(x, deterministic)
        x = BasicLayer(32, 2, name="stage_1")(x, deterministic)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_labels, name="classifier")(x)
