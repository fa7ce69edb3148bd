"""The VAE of the official Flax example (examples/vae), Linen: an MLP encoder to a mean and a
log-variance, a sampled latent, and an MLP decoder to 784 pixel logits.

Only the decoder converts: the full model draws ``z`` with ``jax.random`` (``z_rng``),
which no tfjs layer does. Convert the decoder with the VAE's checkpoint::

    python -m writer vae.msgpack out/ --module examples/models/vae.py:GenerativeDecoder --input-shape 20
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jax import random

LATENTS = 20


class Encoder(nn.Module):
    latents: int = LATENTS

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(500, name="fc1")(x))
        return nn.Dense(self.latents, name="fc2_mean")(x), nn.Dense(self.latents, name="fc2_logvar")(x)


class Decoder(nn.Module):
    @nn.compact
    def __call__(self, z):
        z = nn.relu(nn.Dense(500, name="fc1")(z))
        return nn.Dense(784, name="fc2")(z)


def reparameterize(rng, mean, logvar):
    return mean + jnp.exp(0.5 * logvar) * random.normal(rng, logvar.shape)


class VAE(nn.Module):
    latents: int = LATENTS

    def setup(self):
        self.encoder = Encoder(self.latents)
        self.decoder = Decoder()

    def __call__(self, x, z_rng):
        mean, logvar = self.encoder(x)
        return self.decoder(reparameterize(z_rng, mean, logvar)), mean, logvar

    def generate(self, z):
        return nn.sigmoid(self.decoder(z))


class GenerativeDecoder(nn.Module):
    """``VAE.generate`` as a model of its own: latent z -> pixel probabilities, with the VAE's
    parameter names (``decoder/fc1``, ``decoder/fc2``), so the VAE checkpoint loads as it is."""

    @nn.compact
    def __call__(self, z):
        return nn.sigmoid(Decoder(name="decoder")(z))
