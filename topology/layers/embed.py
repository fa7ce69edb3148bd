"""Flax ``nn.Embed`` / NNX ``nnx.Embed`` on int32 token ids -> tfjs ``Embedding``.

The table (num_embeddings, features) is tfjs' ``embeddings`` weight as it is.
Convert with ``input_dtype="int32"`` (``--input-dtype int32``) so the model
input carries token ids. Ids outside [0, num_embeddings) differ: Flax returns
NaN rows, tfjs' gather does not; valid ids match exactly.
"""
from __future__ import annotations

from typing import Any

from topology.layers.base import ZEROS, Case, LayerKind, ParamMap, layer_base
from topology.trace_kit.call_context import CallContext


def _config(input_dim: int, output_dim: int) -> dict:
    return layer_base(
        input_dim=int(input_dim), output_dim=int(output_dim), embeddings_initializer=ZEROS,
        embeddings_regularizer=None, activity_regularizer=None, embeddings_constraint=None,
        mask_zero=False, input_length=None,
    )


def _read_attrs(module: Any, context: CallContext) -> dict:
    return {"input_dim": int(module.num_embeddings), "output_dim": int(module.features)}


def _cases() -> tuple[Case, ...]:
    import flax.linen as nn
    import jax.numpy as jnp
    from flax import nnx

    class Pooled(nn.Module):  # tokens -> vectors -> mean over tokens -> logits
        @nn.compact
        def __call__(self, ids):
            return nn.Dense(3)(jnp.mean(nn.Embed(11, 6)(ids), axis=1))

    class NnxFlat(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.embed = nnx.Embed(9, 4, rngs=rngs)
            self.head = nnx.Linear(5 * 4, 2, rngs=rngs)

        def __call__(self, ids):
            return self.head(self.embed(ids).reshape((ids.shape[0], -1)))

    return (
        Case("linen-embed", lambda: nn.Embed(10, 4), (5,), input_dtype="int32", input_range=(0, 10)),
        Case("linen-embed-2d-ids", lambda: nn.Embed(7, 3), (2, 3), input_dtype="int32", input_range=(0, 7)),
        Case("linen-embed-mean-dense", Pooled, (6,), input_dtype="int32", input_range=(0, 11)),
        Case("nnx-embed", lambda: nnx.Embed(10, 4, rngs=nnx.Rngs(0)), (5,), input_dtype="int32", input_range=(0, 10)),
        Case("nnx-embed-flatten-dense", lambda: NnxFlat(nnx.Rngs(0)), (5,), input_dtype="int32", input_range=(0, 9)),
    )


KIND = LayerKind(
    key="embed",
    keras_class="Embedding",
    flax_modules=("nn.Embed", "nnx.Embed"),
    make_config=_config,
    params=(ParamMap("embedding", "embeddings"),),
    summary="token embedding on int32 ids (convert with input_dtype int32); the table is kept as is",
    flax_classes=("flax.linen:Embed", "flax.nnx:Embed"),
    read_attrs=_read_attrs,
    cases=_cases,
)
