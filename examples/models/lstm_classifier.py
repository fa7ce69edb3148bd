"""An LSTM text classifier in the style of the Flax sst2 example.

Two int32 inputs: ``tokens`` (batch, length), padded at the end with 0, and
``lengths`` (batch,) — one number per example, declared with ``--input-shape ""``.
The LSTM runs with ``seq_lengths=lengths``; its outputs are averaged over the real
tokens with the mask ``jnp.arange(L) < lengths[:, None]``, then a Dense gives logits.

Convert (from the repository root)::

    python -m writer lstm_ckpt/ out/ --module examples/models/lstm_classifier.py:LstmClassifier \\
        --input-shape 16 --input-shape "" --input-dtype int32
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class LstmClassifier(nn.Module):
    vocab: int = 50
    embed: int = 16
    hidden: int = 24
    classes: int = 2

    @nn.compact
    def __call__(self, tokens: jnp.ndarray, lengths: jnp.ndarray) -> jnp.ndarray:
        x = nn.Embed(self.vocab, self.embed)(tokens)
        y = nn.RNN(nn.LSTMCell(self.hidden))(x, seq_lengths=lengths)
        mask = (jnp.arange(tokens.shape[1]) < lengths[:, None]).astype(jnp.float32)
        pooled = jnp.sum(y * mask[:, :, None], axis=1) * (1.0 / tokens.shape[1])
        return nn.Dense(self.classes)(nn.relu(nn.Dense(self.hidden)(pooled)))
