"""Flax ``nn.Conv`` / NNX ``nnx.Conv`` (1-D, 2-D, 3-D) -> tfjs ``Conv1D/2D/3D``.

Flax kernels are (spatial..., in, out), the Keras channels_last layout, so no
transform is needed. Padding is written explicitly ('same' or 'valid').
"""
from topology.layers.base import ZEROS, LayerKind, ParamMap, layer_base


def _config(
    filters: int,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...] | None = None,
    padding: str = "same",
    dilation_rate: tuple[int, ...] | None = None,
    use_bias: bool = True,
    activation: str = "linear",
) -> dict:
    ndim = len(kernel_size)
    return layer_base(
        filters=filters, kernel_size=list(kernel_size),
        strides=list(strides or (1,) * ndim), padding=padding, data_format="channels_last",
        dilation_rate=list(dilation_rate or (1,) * ndim), groups=1,
        activation=activation, use_bias=use_bias,
        kernel_initializer=ZEROS, bias_initializer=ZEROS,
        kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
        kernel_constraint=None, bias_constraint=None,
    )


KIND = LayerKind(
    key="conv",
    keras_class=lambda attrs: f"Conv{len(attrs['kernel_size'])}D",
    flax_modules=("nn.Conv", "nnx.Conv"),
    make_config=_config,
    params=(ParamMap("kernel", "kernel"), ParamMap("bias", "bias", optional=True)),
    summary="N-d convolution (N = 1, 2, 3); kernel (spatial..., in, out) kept as is",
)

