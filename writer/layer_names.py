"""Layer names tfjs accepts: ``^[A-Za-z0-9][-A-Za-z0-9._]*$`` (tfjs-layers' tensor-name rule, which
every weight name ``<layer>/<weight>`` must pass; schemas/model.schema.json ``layerName``).

Flax allows any module name (``_fc1``, ``fc 1``, ``dénse``); such names are rewritten with a
``fixed[LAYER_NAME]`` notice instead of producing a model.json that tfjs refuses.
"""
from __future__ import annotations

import re
import unicodedata

from topology.graph import LayerGraph, split_ref, tensor_ref
from topology.vocabulary.errors import Notices

_VALID = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9._]*$")
_INVALID_CHARS = re.compile(r"[^-A-Za-z0-9._]+")


def tfjs_layer_name(name: str) -> str:
    """The closest name tfjs accepts (not yet made unique).

    Example:
        >>> [tfjs_layer_name(n) for n in ["_fc1", "fc 1", "dénse", "Dense_0", "__", "层"]]
        ['fc1', 'fc_1', 'dense', 'Dense_0', 'layer', 'layer']
    """
    if _VALID.match(name):
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    cleaned = _INVALID_CHARS.sub("_", ascii_name).lstrip("-._")
    return cleaned or "layer"


def sanitize_layer_names(graph: LayerGraph, notices: Notices) -> dict[str, str]:
    """Rename layers tfjs would reject (and every reference to them); returns ``{old: new}``.

    Example:
        >>> from topology.graph import InputSpec, LayerNode
        >>> g = LayerGraph([InputSpec("input", (4,))], [LayerNode("fc 1", "Dense", {}, ["input"])], ["fc 1"])
        >>> sanitize_layer_names(g, Notices()), g.outputs
        ({'fc 1': 'fc_1'}, ['fc_1'])
    """
    taken = {spec.name for spec in graph.inputs} | {layer.name for layer in graph.layers if _VALID.match(layer.name)}
    renamed: dict[str, str] = {}
    for layer in graph.layers:
        if _VALID.match(layer.name):
            continue
        base = tfjs_layer_name(layer.name)
        new, i = base, 1
        while new in taken:
            new, i = f"{base}_{i}", i + 1
        taken.add(new)
        renamed[layer.name] = new
    if not renamed:
        return renamed
    for layer in graph.layers:
        layer.name = renamed.get(layer.name, layer.name)
        layer.inputs = [_renamed_ref(renamed, ref) for ref in layer.inputs]
    graph.outputs = [_renamed_ref(renamed, ref) for ref in graph.outputs]
    shown = ", ".join(f"{old!r} -> {new!r}" for old, new in renamed.items())
    notices.fixed("LAYER_NAME", f"layer names tfjs rejects were rewritten: {shown}")
    return renamed


def _renamed_ref(renamed: dict[str, str], ref: str) -> str:
    """A tensor reference after its layer was renamed ("lstm 1:2" -> "lstm_1:2")."""
    if ref in renamed:  # a whole name, even one that looks like "name:2"
        return renamed[ref]
    layer, index = split_ref(ref)
    return tensor_ref(renamed.get(layer, layer), index)
