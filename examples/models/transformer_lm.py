"""A decoder-only Transformer LM in the style of the Flax lm1b example, with partitioned params.

Every parameter is created through ``nn.with_logical_partitioning`` (as lm1b does for
model-parallel training), so ``init`` returns ``LogicallyPartitioned`` boxes and a
checkpoint of them stores ``<variable>/value`` leaves. The decoder mask is lm1b's:
padding (token id 0) combined with a causal mask. There are no position embeddings:
the causal mask alone orders the tokens.

Convert (from the repository root)::

    python -m writer lm_ckpt/ out/ --module examples/models/transformer_lm.py:TransformerLM \\
        --input-shape 16 --input-dtype int32
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

def _init(init, *names):
    return nn.with_logical_partitioning(init, names)


class DecoderBlock(nn.Module):
    dim: int
    heads: int
    mlp: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
        norm = dict(scale_init=_init(nn.initializers.ones, "embed"), bias_init=_init(nn.initializers.zeros, "embed"))
        y = nn.LayerNorm(**norm)(x)
        y = nn.SelfAttention(self.heads, kernel_init=_init(nn.initializers.xavier_uniform(), "embed", "heads", "kv"),
                             use_bias=False, deterministic=True)(y, mask=mask)
        x = x + y
        y = nn.LayerNorm(**norm)(x)
        y = nn.Dense(self.mlp, kernel_init=_init(nn.initializers.xavier_uniform(), "embed", "mlp"),
                     bias_init=_init(nn.initializers.normal(1e-2), "mlp"))(y)
        y = nn.Dense(self.dim, kernel_init=_init(nn.initializers.xavier_uniform(), "mlp", "embed"),
                     bias_init=_init(nn.initializers.normal(1e-2), "embed"))(nn.relu(y))
        return x + y


class TransformerLM(nn.Module):
    vocab: int = 64
    dim: int = 32
    heads: int = 4
    mlp: int = 64
    layers: int = 2

    @nn.compact
    def __call__(self, tokens: jnp.ndarray) -> jnp.ndarray:
        x = nn.Embed(self.vocab, self.dim, embedding_init=_init(nn.initializers.normal(1.0), "vocab", "embed"))(tokens)
        mask = nn.combine_masks(nn.make_attention_mask(tokens > 0, tokens > 0), nn.make_causal_mask(tokens))
        for _ in range(self.layers):
            x = DecoderBlock(self.dim, self.heads, self.mlp)(x, mask)
        x = nn.LayerNorm(scale_init=_init(nn.initializers.ones, "embed"), bias_init=_init(nn.initializers.zeros, "embed"))(x)
        return nn.Dense(self.vocab, kernel_init=_init(nn.initializers.xavier_uniform(), "embed", "vocab"))(x)
