"""``x.reshape((x.shape[0], -1))`` on channels-last data -> tfjs ``Flatten`` (same row-major order)."""
from topology.layers.base import LayerKind, layer_base

KIND = LayerKind(
    key="flatten",
    keras_class="Flatten",
    flax_modules=("x.reshape(batch, -1)",),
    make_config=lambda: layer_base(data_format="channels_last"),
    summary="flatten everything but the batch axis, channels-last order",
)
