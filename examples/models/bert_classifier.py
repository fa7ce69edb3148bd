"""A BERT-style text classifier written the way HuggingFace's FlaxBert code is.

Three int32 inputs, in this order: ``input_ids``, ``attention_mask`` (1 = token,
0 = padding) and ``token_type_ids`` (segment A/B). Word, position (``jnp.arange(L)``)
and token-type embeddings are summed and normalised; each layer runs hand-written
einsum attention whose padding bias is ``lax.select(attention_mask > 0, 0, finfo.min)``
(through ``flax.linen.dot_product_attention_weights``), then the exact GELU MLP. The
pooler takes the first token ([CLS]) through tanh, the classifier gives logits.

Convert (from the repository root)::

    python -m writer bert_ckpt/ out/ --module examples/models/bert_classifier.py:BertClassifier \\
        --input-shape 16 --input-shape 16 --input-shape 16 --input-dtype int32
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.attention import dot_product_attention_weights


class BertSelfAttention(nn.Module):
    dim: int
    heads: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, attention_mask: jnp.ndarray) -> jnp.ndarray:
        batch, length, _ = x.shape
        split = lambda t: t.reshape((batch, length, self.heads, self.dim // self.heads))  # noqa: E731
        query = split(nn.Dense(self.dim, name="query")(x))
        key = split(nn.Dense(self.dim, name="key")(x))
        value = split(nn.Dense(self.dim, name="value")(x))
        mask = jnp.expand_dims(attention_mask, axis=(-3, -2))
        bias = jax.lax.select(mask > 0, jnp.full(mask.shape, 0.0), jnp.full(mask.shape, jnp.finfo(jnp.float32).min))
        weights = dot_product_attention_weights(query, key, bias=bias, deterministic=True)
        out = jnp.einsum("...hqk,...khd->...qhd", weights, value)
        return out.reshape((batch, length, self.dim))


class BertLayer(nn.Module):
    dim: int
    heads: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, attention_mask: jnp.ndarray) -> jnp.ndarray:
        attended = nn.Dense(self.dim, name="attention_output")(BertSelfAttention(self.dim, self.heads)(x, attention_mask))
        x = nn.LayerNorm(epsilon=1e-12, name="attention_norm")(x + attended)
        h = nn.gelu(nn.Dense(4 * self.dim, name="intermediate")(x), approximate=False)
        return nn.LayerNorm(epsilon=1e-12, name="output_norm")(x + nn.Dense(self.dim, name="output")(h))


class BertClassifier(nn.Module):
    vocab: int = 100
    dim: int = 32
    heads: int = 4
    layers: int = 2
    max_positions: int = 64
    classes: int = 3

    @nn.compact
    def __call__(self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray, token_type_ids: jnp.ndarray) -> jnp.ndarray:
        positions = jnp.arange(input_ids.shape[-1])[None, :]
        x = (nn.Embed(self.vocab, self.dim, name="word_embeddings")(input_ids)
             + nn.Embed(self.max_positions, self.dim, name="position_embeddings")(positions)
             + nn.Embed(2, self.dim, name="token_type_embeddings")(token_type_ids))
        x = nn.LayerNorm(epsilon=1e-12, name="embeddings_norm")(x)
        for i in range(self.layers):
            x = BertLayer(self.dim, self.heads, name=f"layer_{i}")(x, attention_mask)
        pooled = jnp.tanh(nn.Dense(self.dim, name="pooler")(x[:, 0]))
        return nn.Dense(self.classes, name="classifier")(pooled)
