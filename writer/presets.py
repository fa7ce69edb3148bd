"""Deployment presets: one word for the weight options that suit a target.

``web``: float16 weights in 4 MiB shards (half the download, float32-like accuracy).
``mobile``: uint8 weights in 1 MiB shards with graph optimisation on (a quarter of the
download; small shards survive flaky connections). Used by ``convert --preset`` and the studio.
Options given explicitly win over the preset's.

Example:
    >>> preset_fields("web")["quantize"], preset_fields("web")["weight_shard_size_bytes"]
    ('float16', 4194304)
"""
from __future__ import annotations

from topology.vocabulary.errors import ConversionError
from writer.convert import ConvertOptions

MIB = 1024 * 1024
PRESETS: dict[str, dict] = {
    "web": {"quantize": "float16", "weight_shard_size_bytes": 4 * MIB},
    "mobile": {"quantize": "uint8", "weight_shard_size_bytes": 1 * MIB, "optimize": True},
}


def engine_fields() -> set[str]:
    """The option names this build's :class:`writer.convert.ConvertOptions` accepts."""
    return set(ConvertOptions.__dataclass_fields__)


def preset_fields(name: str) -> dict:
    """The ConvertOptions fields of preset ``name``, limited to those this engine knows
    (``optimize`` only where the engine has graph optimisation).

    Example:
        >>> preset_fields("mobile")["quantize"]
        'uint8'
    """
    if name not in PRESETS:
        raise ConversionError("BAD_OPTION", f"--preset {name}", f"choose one of {', '.join(PRESETS)}")
    known = engine_fields()
    return {key: value for key, value in PRESETS[name].items() if key in known}
