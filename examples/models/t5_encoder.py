"""A T5-style encoder (Linen): relative position buckets (log-spaced, bidirectional) looked up in
a learned bias table shared by the layers, T5's scale-only LayerNorm, bias-free projections,
a ReLU feed-forward, and a mean-pooled classifier.

    python -m writer t5.msgpack out/ --module examples/models/t5_encoder.py:T5Encoder \\
        --input-shape 16 --input-dtype int32 --format graph-model
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def relative_position_bucket(relative, num_buckets: int = 32, max_distance: int = 128):
    """T5's bucketing: exact buckets for small distances, log-spaced ones up to max_distance."""
    num_buckets //= 2
    bucket = (relative > 0).astype(jnp.int32) * num_buckets
    relative = jnp.abs(relative)
    max_exact = num_buckets // 2
    is_small = relative < max_exact
    large = max_exact + (jnp.log(relative.astype(jnp.float32) / max_exact + 1e-6)
                         / math.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(is_small, relative, large)


class T5LayerNorm(nn.Module):
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.ones, (x.shape[-1],))
        return weight * x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)


class T5Encoder(nn.Module):
    vocab: int = 64
    dim: int = 32
    heads: int = 4
    layers: int = 2
    buckets: int = 32
    classes: int = 3

    @nn.compact
    def __call__(self, input_ids):
        batch, length = input_ids.shape
        x = nn.Embed(self.vocab, self.dim, name="shared")(input_ids)
        context = jnp.arange(length)[:, None]
        memory = jnp.arange(length)[None, :]
        buckets = relative_position_bucket(memory - context, self.buckets)
        bias_table = nn.Embed(self.buckets, self.heads, name="relative_attention_bias")
        position_bias = jnp.transpose(bias_table(buckets), (2, 0, 1))[None]  # (1, heads, q, k)
        head_dim = self.dim // self.heads
        for i in range(self.layers):
            h = T5LayerNorm(name=f"layer_{i}_ln_attn")(x)
            split = lambda t: t.reshape(batch, length, self.heads, head_dim)  # noqa: E731
            q = split(nn.Dense(self.dim, use_bias=False, name=f"layer_{i}_q")(h))
            k = split(nn.Dense(self.dim, use_bias=False, name=f"layer_{i}_k")(h))
            v = split(nn.Dense(self.dim, use_bias=False, name=f"layer_{i}_v")(h))
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) + position_bias
            out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v).reshape(batch, length, self.dim)
            x = x + nn.Dense(self.dim, use_bias=False, name=f"layer_{i}_o")(out)
            h = T5LayerNorm(name=f"layer_{i}_ln_ff")(x)
            x = x + nn.Dense(self.dim, use_bias=False, name=f"layer_{i}_wo")(
                nn.relu(nn.Dense(2 * self.dim, use_bias=False, name=f"layer_{i}_wi")(h)))
        x = T5LayerNorm(name="final_layer_norm")(x)
        return nn.Dense(self.classes, name="classifier")(x.mean(axis=1))
