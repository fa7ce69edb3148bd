"""Flax ``nn.Dropout`` / NNX ``nnx.Dropout`` -> tfjs ``Dropout`` (the identity at inference).

Tracing runs in inference mode (``deterministic=True``, ``train=False``, NNX
``.eval()``), where Flax's dropout returns its input. The call is still kept
as a tfjs Dropout layer with the same rate, so the converted model lists the
layers the Flax model has; tfjs' ``predict`` never drops.
"""
from __future__ import annotations

from typing import Any

from topology.layers.base import Case, LayerKind, layer_base
from topology.layers.batchnorm import training_mode_error
from topology.trace_kit.call_context import CallContext


def _config(rate: float) -> dict:
    return layer_base(rate=float(rate), noise_shape=None, seed=None)


def _read_attrs(module: Any, context: CallContext) -> dict:
    return {"rate": float(module.rate), "_deterministic": module.deterministic}


def _expand(kind: LayerKind, name: str, attrs: dict, inputs: list[str], variables: dict, origin: str,
            output_shape: Any) -> list:
    deterministic = attrs.get("_call_flags", {}).get("deterministic", attrs.get("_deterministic"))
    if deterministic is False and attrs["rate"] > 0:  # random masks: nothing a converted model reproduces
        raise training_mode_error("Dropout", origin, "deterministic=False", "deterministic=not train")
    return [kind.node(name, attrs, inputs, variables, origin, output_shape)]


def _cases() -> tuple[Case, ...]:
    import flax.linen as nn
    from flax import nnx

    class Deterministic(nn.Module):  # the flag passed at call time
        @nn.compact
        def __call__(self, x, deterministic: bool = False):
            x = nn.Dense(6)(x)
            return nn.Dense(3)(nn.Dropout(0.5)(x, deterministic=deterministic))

    class TrainFlag(nn.Module):  # the usual `train` flag, dropout last
        @nn.compact
        def __call__(self, x, train: bool = True):
            x = nn.relu(nn.Dense(6)(x))
            return nn.Dropout(0.3, deterministic=not train)(x)

    class NnxDropout(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.linear = nnx.Linear(5, 4, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)  # its rng stream is state, not a weight

        def __call__(self, x):
            return self.dropout(nnx.relu(self.linear(x)))

    return (
        Case("linen-dropout-deterministic-arg", Deterministic, (5,)),
        Case("linen-dropout-train-flag", TrainFlag, (5,)),
        Case("nnx-dropout", lambda: NnxDropout(nnx.Rngs(0)), (5,)),
    )


KIND = LayerKind(
    key="dropout",
    keras_class="Dropout",
    flax_modules=("nn.Dropout", "nnx.Dropout"),
    make_config=_config,
    summary="dropout: the identity at inference, kept as a tfjs Dropout with the same rate",
    flax_classes=("flax.linen:Dropout", "flax.nnx:Dropout"),
    read_attrs=_read_attrs,
    expand=_expand,
    cases=_cases,
)
