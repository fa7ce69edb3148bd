"""A small Vision Transformer in the style of HuggingFace's FlaxViTModel (Linen).

Patch embedding by a strided convolution, a learned ``cls_token`` concatenated in
front of the patches, learned ``position_embeddings`` added to them, pre-norm
encoder layers (self-attention and a GELU MLP, residual adds), a final LayerNorm
and a classifier on the cls token. The defaults (32x32x3 images, 8x8 patches,
2 layers of width 32) keep the checkpoint tiny; the code is the same for ViT-B/16.

Convert a checkpoint of it with::

    python -m writer vit.msgpack out/ --module examples/models/vit.py:ViT --input-shape 32,32,3
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class ViTEmbeddings(nn.Module):
    patch_size: int = 8
    hidden_size: int = 32

    @nn.compact
    def __call__(self, pixel_values, deterministic: bool = True):
        batch = pixel_values.shape[0]
        patches = nn.Conv(self.hidden_size, (self.patch_size,) * 2, strides=(self.patch_size,) * 2,
                          padding="VALID", name="patch_embeddings")(pixel_values)
        patches = patches.reshape((batch, -1, self.hidden_size))
        cls_token = self.param("cls_token", nn.initializers.zeros, (1, 1, self.hidden_size))
        position_embeddings = self.param("position_embeddings", nn.initializers.normal(0.02),
                                         (1, patches.shape[1] + 1, self.hidden_size))
        cls_tokens = jnp.broadcast_to(cls_token, (batch, 1, self.hidden_size))
        embeddings = jnp.concatenate([cls_tokens, patches], axis=1) + position_embeddings
        return nn.Dropout(0.1)(embeddings, deterministic=deterministic)


class ViTLayer(nn.Module):
    hidden_size: int = 32
    num_heads: int = 4
    mlp_size: int = 64

    @nn.compact
    def __call__(self, hidden, deterministic: bool = True):
        attended = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, name="attention")(
            nn.LayerNorm(epsilon=1e-12, name="layernorm_before")(hidden), deterministic=deterministic)
        hidden = hidden + attended
        mlp = nn.Dense(self.mlp_size, name="intermediate")(nn.LayerNorm(epsilon=1e-12, name="layernorm_after")(hidden))
        mlp = nn.Dense(self.hidden_size, name="output")(nn.gelu(mlp, approximate=False))
        return hidden + nn.Dropout(0.1)(mlp, deterministic=deterministic)


class ViT(nn.Module):
    num_labels: int = 10
    num_layers: int = 2
    hidden_size: int = 32

    @nn.compact
    def __call__(self, pixel_values, deterministic: bool = True):
        hidden = ViTEmbeddings(hidden_size=self.hidden_size, name="embeddings")(pixel_values, deterministic)
        for i in range(self.num_layers):
            hidden = ViTLayer(hidden_size=self.hidden_size, name=f"layer_{i}")(hidden, deterministic)
        hidden = nn.LayerNorm(epsilon=1e-12, name="layernorm")(hidden)
        return nn.Dense(self.num_labels, name="classifier")(hidden[:, 0, :])
