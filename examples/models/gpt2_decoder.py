"""A GPT-2-style causal decoder written the way HuggingFace's FlaxGPT2 code is.

Token embeddings plus learned position embeddings of ``jnp.arange(L)``, pre-LayerNorm
blocks with a fused ``c_attn`` projection split into heads, hand-written einsum
attention with a constant causal bias (``lax.select(mask, 0, finfo.min)``) through
``flax.linen.dot_product_attention_weights``, the tanh GELU (``gelu_new``), and an LM
head tied to the token embedding (``wte.attend``).

Convert (from the repository root)::

    python -m writer gpt2_ckpt/ out/ --module examples/models/gpt2_decoder.py:GPT2 \\
        --input-shape 16 --input-dtype int32
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.attention import dot_product_attention_weights


class GPT2Attention(nn.Module):
    dim: int
    heads: int
    max_positions: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        batch, length, _ = x.shape
        qkv = nn.Dense(3 * self.dim, name="c_attn")(x)
        query, key, value = jnp.split(qkv, 3, axis=2)
        split = lambda t: t.reshape((batch, length, self.heads, self.dim // self.heads))  # noqa: E731
        query, key, value = split(query), split(key), split(value)
        causal = nn.make_causal_mask(jnp.ones((1, self.max_positions), dtype="bool"), dtype="bool")
        causal = causal[:, :, :length, :length]
        bias = jax.lax.select(causal > 0, jnp.full(causal.shape, 0.0), jnp.full(causal.shape, jnp.finfo(jnp.float32).min))
        weights = dot_product_attention_weights(query, key, bias=bias, deterministic=True)
        out = jnp.einsum("...hqk,...khd->...qhd", weights, value)
        return nn.Dense(self.dim, name="c_proj")(out.reshape((batch, length, self.dim)))


class GPT2Block(nn.Module):
    dim: int
    heads: int
    max_positions: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = x + GPT2Attention(self.dim, self.heads, self.max_positions, name="attn")(
            nn.LayerNorm(epsilon=1e-5, name="ln_1")(x))
        h = nn.Dense(4 * self.dim, name="c_fc")(nn.LayerNorm(epsilon=1e-5, name="ln_2")(x))
        return x + nn.Dense(self.dim, name="c_proj")(jax.nn.gelu(h, approximate=True))


class GPT2(nn.Module):
    vocab: int = 96
    dim: int = 32
    heads: int = 4
    layers: int = 2
    max_positions: int = 64

    @nn.compact
    def __call__(self, input_ids: jnp.ndarray) -> jnp.ndarray:
        wte = nn.Embed(self.vocab, self.dim, name="wte")
        positions = jnp.arange(input_ids.shape[-1])[None, :]
        x = wte(input_ids) + nn.Embed(self.max_positions, self.dim, name="wpe")(positions)
        for i in range(self.layers):
            x = GPT2Block(self.dim, self.heads, self.max_positions, name=f"h_{i}")(x)
        return wte.attend(nn.LayerNorm(epsilon=1e-5, name="ln_f")(x))
