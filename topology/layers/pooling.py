"""Flax ``nn.avg_pool`` / ``nn.max_pool`` -> tfjs ``AveragePooling{N}D`` / ``MaxPooling{N}D``.

Only VALID pooling (or SAME max pooling) maps one to one: Flax's SAME average
pooling counts padded cells, tfjs does not; that case is composed elsewhere.
"""
from topology.layers.base import LayerKind, layer_base


def _config(pool_size: tuple[int, ...], strides: tuple[int, ...] | None = None, padding: str = "valid", op: str = "avg") -> dict:
    return layer_base(
        pool_size=list(pool_size), padding=padding,
        strides=list(strides or pool_size), data_format="channels_last",
    )


def _class(attrs: dict) -> str:
    prefix = {"avg": "Average", "max": "Max"}[attrs.get("op", "avg")]
    return f"{prefix}Pooling{len(attrs['pool_size'])}D"


KIND = LayerKind(
    key="pool",
    keras_class=_class,
    flax_modules=("nn.avg_pool", "nn.max_pool"),
    make_config=_config,
    summary="average / max pooling over 1-3 spatial axes, VALID padding",
)
