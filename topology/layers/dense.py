"""Flax ``nn.Dense`` / NNX ``nnx.Linear`` -> tfjs ``Dense``. Kernel layout (in, out) is shared."""
from __future__ import annotations

from typing import Any

from topology.layers.base import ZEROS, Case, FoldTarget, LayerKind, ParamMap, layer_base
from topology.trace_kit.call_context import CallContext


def dense_config(units: int, use_bias: bool = True, activation: str = "linear") -> dict:
    """The Keras-2 config of a Dense layer (also for the Dense layers the tracer composes).

    Example:
        >>> dense_config(3)["units"], dense_config(3, use_bias=False)["use_bias"]
        (3, False)
    """
    return layer_base(
        units=units, activation=activation, use_bias=use_bias,
        kernel_initializer=ZEROS, bias_initializer=ZEROS,
        kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
        kernel_constraint=None, bias_constraint=None,
    )


def _read_attrs(module: Any, context: CallContext) -> dict:
    units = module.features if hasattr(module, "features") else module.out_features
    return {"units": int(units), "use_bias": bool(module.use_bias)}


def _cases() -> tuple[Case, ...]:
    import flax.linen as nn
    from flax import nnx

    class Nested(nn.Module):  # submodules at depth: layer names follow the module path
        @nn.compact
        def __call__(self, x):
            block = nn.Sequential([nn.Dense(6), nn.relu, nn.Dense(5, use_bias=False)])
            return nn.Dense(2)(block(x))

    class TiedHead(nn.Module):  # transformers' GPT-2/GPT-Neo/OPT/XGLM/Gemma LM head: the embedding, transposed
        bias: bool = False

        def setup(self):
            self.wte = nn.Embed(12, 6)
            self.ln_f = nn.LayerNorm()
            self.lm_head = nn.Dense(12, use_bias=self.bias)

        def __call__(self, ids):
            h = self.ln_f(self.wte(ids))
            params = {"kernel": self.wte.variables["params"]["embedding"].T}
            if self.bias:  # a computed bias too: the head's own bias would be in the checkpoint otherwise
                params["bias"] = self.wte.variables["params"]["embedding"][:, 0] * 2.0
            return self.lm_head.apply({"params": params}, h)

    class NnxTiedHead(nnx.Module):  # the NNX way: the head's matmul written with the embedding
        def __init__(self, rngs: nnx.Rngs):
            self.wte = nnx.Embed(12, 6, rngs=rngs)
            self.ln_f = nnx.LayerNorm(6, rngs=rngs)

        def __call__(self, ids):
            return self.wte.attend(self.ln_f(self.wte(ids)))

    ids = {"input_dtype": "int32", "input_range": (0, 12)}
    return (
        Case("linen-tied-lm-head-apply-computed-kernel", TiedHead, (5,), **ids),
        Case("linen-tied-lm-head-computed-kernel-and-bias", lambda: TiedHead(bias=True), (4,), **ids),
        Case("nnx-tied-lm-head-attend", lambda: NnxTiedHead(nnx.Rngs(0)), (5,), **ids),
        Case("linen-dense", lambda: nn.Dense(5), (7,)),
        Case("linen-dense-no-bias", lambda: nn.Dense(5, use_bias=False), (7,)),
        Case("linen-dense-on-3d", lambda: nn.Dense(4), (6, 3)),
        Case("linen-sequential-nested", Nested, (7,)),
        Case("nnx-linear", lambda: nnx.Linear(7, 5, rngs=nnx.Rngs(0)), (7,)),
    )


KIND = LayerKind(
    key="dense",
    keras_class="Dense",
    flax_modules=("nn.Dense", "nnx.Linear"),
    make_config=dense_config,
    params=(ParamMap("kernel", "kernel"), ParamMap("bias", "bias", optional=True)),
    summary="fully connected layer; kernel (in, out) kept as is",
    flax_classes=("flax.linen:Dense", "flax.nnx:Linear"),
    read_attrs=_read_attrs,
    fold_targets=(FoldTarget("Dense"),),  # every Dense, whichever kind or op wrote it
    cases=_cases,
)
