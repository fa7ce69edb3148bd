"""Flax ``nn.Dense`` / NNX ``nnx.Linear`` -> tfjs ``Dense``. Kernel layout (in, out) is shared."""
from topology.layers.base import ZEROS, LayerKind, ParamMap, layer_base


def _config(units: int, use_bias: bool = True, activation: str = "linear") -> dict:
    return layer_base(
        units=units, activation=activation, use_bias=use_bias,
        kernel_initializer=ZEROS, bias_initializer=ZEROS,
        kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
        kernel_constraint=None, bias_constraint=None,
    )


KIND = LayerKind(
    key="dense",
    keras_class="Dense",
    flax_modules=("nn.Dense", "nnx.Linear"),
    make_config=_config,
    params=(ParamMap("kernel", "kernel"), ParamMap("bias", "bias", optional=True)),
    summary="fully connected layer; kernel (in, out) kept as is",
)
