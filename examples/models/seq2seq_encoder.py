"""An LSTM encoder in the style of the Flax seq2seq example, whose final carry feeds a classifier.

One int32 input, ``tokens`` (batch, length). The encoder is
``nn.RNN(nn.LSTMCell(hidden), return_carry=True)``: it returns ``((c, h), outputs)``,
and the final carry ``(c, h)`` — the sentence summary a seq2seq decoder would start
from — goes through a Dense head. In TF.js the carry is the LSTM's ``return_state``
outputs (``[output, h, c]``).

Convert (from the repository root)::

    python -m writer encoder_ckpt/ out/ --module examples/models/seq2seq_encoder.py:Seq2SeqEncoderClassifier \\
        --input-shape 12 --input-dtype int32
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class Seq2SeqEncoderClassifier(nn.Module):
    vocab: int = 40
    embed: int = 12
    hidden: int = 16
    classes: int = 3

    @nn.compact
    def __call__(self, tokens: jnp.ndarray) -> jnp.ndarray:
        x = nn.Embed(self.vocab, self.embed)(tokens)
        (c, h), _ = nn.RNN(nn.LSTMCell(self.hidden), return_carry=True, name="encoder")(x)
        summary = jnp.concatenate([c, h], axis=-1)
        return nn.Dense(self.classes)(nn.relu(nn.Dense(self.hidden)(summary)))
