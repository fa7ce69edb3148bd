"""A RoBERTa-style classifier (Linen): position ids from a cumulative sum over the non-padding
tokens (``cumsum(ids != pad) * (ids != pad) + pad``, as HuggingFace computes them), so the
position-embedding lookup depends on the data; post-LayerNorm encoder layers with a padding
mask; the classification head on the first token.

    python -m writer roberta.msgpack out/ --module examples/models/roberta_classifier.py:Roberta \\
        --input-shape 16 --input-dtype int32 --format graph-model
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class Roberta(nn.Module):
    vocab: int = 64
    dim: int = 32
    heads: int = 4
    layers: int = 2
    max_positions: int = 40
    pad: int = 1
    classes: int = 2

    @nn.compact
    def __call__(self, input_ids):
        batch, length = input_ids.shape
        mask = (input_ids != self.pad).astype(jnp.int32)
        positions = jnp.cumsum(mask, axis=1) * mask + self.pad
        x = nn.Embed(self.vocab, self.dim, name="word_embeddings")(input_ids)
        x = x + nn.Embed(self.max_positions, self.dim, name="position_embeddings")(positions)
        x = nn.LayerNorm(epsilon=1e-5, name="embeddings_ln")(x)
        attention_bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
        head_dim = self.dim // self.heads
        for i in range(self.layers):
            split = lambda t: t.reshape(batch, length, self.heads, head_dim)  # noqa: E731
            q = split(nn.Dense(self.dim, name=f"layer_{i}_query")(x))
            k = split(nn.Dense(self.dim, name=f"layer_{i}_key")(x))
            v = split(nn.Dense(self.dim, name=f"layer_{i}_value")(x))
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(jnp.float32) + attention_bias
            out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v).reshape(batch, length, self.dim)
            x = nn.LayerNorm(epsilon=1e-5, name=f"layer_{i}_attn_ln")(x + nn.Dense(self.dim, name=f"layer_{i}_out")(out))
            h = jax.nn.gelu(nn.Dense(2 * self.dim, name=f"layer_{i}_intermediate")(x), approximate=False)
            x = nn.LayerNorm(epsilon=1e-5, name=f"layer_{i}_ffn_ln")(x + nn.Dense(self.dim, name=f"layer_{i}_output")(h))
        head = jnp.tanh(nn.Dense(self.dim, name="classifier_dense")(x[:, 0]))
        return nn.Dense(self.classes, name="classifier_out")(head)
