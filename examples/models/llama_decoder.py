"""A Llama-style decoder (Linen): RMSNorm, rotary position embeddings, grouped-query attention
(fewer key/value heads than query heads), a causal mask, a SwiGLU MLP and an LM head tied to
the token embedding. Tiny defaults; the code is the shape of Llama/Mistral/Qwen.

Keras layers cannot express rotary embeddings over arbitrary shapes or the head repetition, so
this converts as a GraphModel::

    python -m writer llama.msgpack out/ --module examples/models/llama_decoder.py:Llama \\
        --input-shape 16 --input-dtype int32 --format graph-model
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class RMSNorm(nn.Module):
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.ones, (x.shape[-1],))
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight


def rotary(x, base: float = 10000.0):
    """Rotate pairs (first half, second half) of the head dimension by position-dependent angles."""
    length, dim = x.shape[1], x.shape[-1]
    inv_freq = 1.0 / (base ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
    first, second = x[..., : dim // 2], x[..., dim // 2:]
    return jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)


class Attention(nn.Module):
    dim: int
    heads: int
    kv_heads: int

    @nn.compact
    def __call__(self, x):
        batch, length, _ = x.shape
        head_dim = self.dim // self.heads
        q = nn.Dense(self.heads * head_dim, use_bias=False, name="q_proj")(x).reshape(batch, length, self.heads, head_dim)
        k = nn.Dense(self.kv_heads * head_dim, use_bias=False, name="k_proj")(x).reshape(batch, length, self.kv_heads, head_dim)
        v = nn.Dense(self.kv_heads * head_dim, use_bias=False, name="v_proj")(x).reshape(batch, length, self.kv_heads, head_dim)
        q, k = rotary(q), rotary(k)
        repeat = self.heads // self.kv_heads
        k, v = jnp.repeat(k, repeat, axis=2), jnp.repeat(v, repeat, axis=2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(jnp.float32)
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        scores = jnp.where(causal[None, None], scores, jnp.finfo(jnp.float32).min)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        return nn.Dense(self.dim, use_bias=False, name="o_proj")(out.reshape(batch, length, self.dim))


class Block(nn.Module):
    dim: int
    heads: int
    kv_heads: int
    hidden: int

    @nn.compact
    def __call__(self, x):
        x = x + Attention(self.dim, self.heads, self.kv_heads, name="self_attn")(RMSNorm(name="input_layernorm")(x))
        h = RMSNorm(name="post_attention_layernorm")(x)
        gate = nn.Dense(self.hidden, use_bias=False, name="gate_proj")(h)
        up = nn.Dense(self.hidden, use_bias=False, name="up_proj")(h)
        return x + nn.Dense(self.dim, use_bias=False, name="down_proj")(jax.nn.silu(gate) * up)


class Llama(nn.Module):
    vocab: int = 64
    dim: int = 32
    heads: int = 4
    kv_heads: int = 2
    hidden: int = 64
    layers: int = 2

    @nn.compact
    def __call__(self, input_ids):
        embed = nn.Embed(self.vocab, self.dim, name="embed_tokens")
        x = embed(input_ids)
        for i in range(self.layers):
            x = Block(self.dim, self.heads, self.kv_heads, self.hidden, name=f"layers_{i}")(x)
        return embed.attend(RMSNorm(name="norm")(x))
