"""The check TF.js makes when it loads a model, made before the converter exits 0.

TF.js builds a LayersModel from its outputs backwards: a layer no output depends
on is not part of the model, and its weights have no target variable ("Provided
weight data has no target variable"). And it refuses a model whose layers lack
weights the manifest does not provide. :func:`check_weight_targets` reads the
finished model.json (topology and manifest, not the converter's own graph) and
refuses, with WEIGHT_TARGET_MISMATCH, anything TF.js would refuse: a manifest
weight without exactly one target, and a layer weight missing from the manifest
(for the layer classes whose weights follow from their config).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from topology.vocabulary.errors import ConversionError

# Layer classes without weights (tfjs 4.22); a manifest entry for one of them has no target.
WEIGHTLESS = frozenset({
    "InputLayer", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "Rescaling", "Reshape", "Permute",
    "Flatten", "RepeatVector", "Add", "Multiply", "Maximum", "Minimum", "Average", "Concatenate", "Dot",
    "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling2D",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "Masking",
})


def expected_weights(class_name: str, config: dict) -> set[str] | None:
    """The weight names a layer of ``class_name`` with ``config`` has in TF.js; None when not known here.

    Example:
        >>> sorted(expected_weights("Dense", {"use_bias": False})), expected_weights("LSTM", {})
        (['kernel'], None)
    """
    bias = {"bias"} if config.get("use_bias", True) else set()
    if class_name in WEIGHTLESS:
        return set()
    if class_name in ("Dense", "Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose", "Conv3DTranspose"):
        return {"kernel", *bias}
    if class_name == "DepthwiseConv2D":
        return {"depthwise_kernel", *bias}
    if class_name in ("SeparableConv1D", "SeparableConv2D"):
        return {"depthwise_kernel", "pointwise_kernel", *bias}
    if class_name == "Embedding":
        return {"embeddings"}
    if class_name in ("LayerNormalization", "BatchNormalization"):
        names = ({"gamma"} if config.get("scale", True) else set()) | ({"beta"} if config.get("center", True) else set())
        return names | ({"moving_mean", "moving_variance"} if class_name == "BatchNormalization" else set())
    return None


def check_weight_targets(document: dict[str, Any]) -> None:
    """Raise WEIGHT_TARGET_MISMATCH unless every manifest weight has exactly one target variable in the
    model TF.js builds from ``document`` and every layer weight known from its config is in the manifest.

    Example:
        >>> topology = {"model_config": {"class_name": "Functional", "config": {"layers": [
        ...     {"class_name": "InputLayer", "name": "x", "inbound_nodes": [], "config": {}},
        ...     {"class_name": "Dense", "name": "d", "inbound_nodes": [[["x", 0, 0, {}]]], "config": {}}],
        ...     "output_layers": [["d", 0, 0]]}}}
        >>> manifest = [{"weights": [{"name": "d/kernel"}, {"name": "d/bias"}]}]
        >>> check_weight_targets({"modelTopology": topology, "weightsManifest": manifest})
        >>> manifest[0]["weights"].append({"name": "e/gamma"})
        >>> check_weight_targets({"modelTopology": topology, "weightsManifest": manifest})
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: WEIGHT_TARGET_MISMATCH: the weight e/gamma in the manifest has no target variable: no layer e in the model (TF.js would refuse to load this model.json)
    """
    model = document["modelTopology"]["model_config"]
    config = model["config"]
    layers = {layer.get("name") or layer["config"]["name"]: layer for layer in config["layers"]}
    if model.get("class_name") == "Sequential":  # a chain: every layer is in the model
        in_model = set(layers)
    else:
        in_model = _reachable(layers, [out[0] for out in config.get("output_layers", [])])
    names = [weight["name"] for group in document["weightsManifest"] for weight in group["weights"]]
    given: dict[str, set[str]] = {}
    times = Counter(names)  # one pass: a model of 60,000 layers has 120,000 weights
    for name in names:
        layer, _, weight = name.partition("/")
        if times[name] > 1:
            _refuse(f"the weight {name} is in the manifest {times[name]} times")
        if layer not in layers:
            _refuse(f"the weight {name} in the manifest has no target variable: no layer {layer} in the model")
        if layer not in in_model:
            _refuse(f"the weight {name} in the manifest has no target variable: no output depends on layer {layer}")
        given.setdefault(layer, set()).add(weight)
    for layer in sorted(in_model):
        spec = layers[layer]
        expected = expected_weights(spec["class_name"], spec.get("config", {}))
        if expected is None or expected == given.get(layer, set()):
            continue
        extra, missing = sorted(given.get(layer, set()) - expected), sorted(expected - given.get(layer, set()))
        _refuse(f"layer {layer} ({spec['class_name']}) "
                + (f"has no variable for the manifest weight(s) {', '.join(extra)}" if extra
                   else f"needs weight(s) {', '.join(missing)} that the manifest does not provide"))


def _reachable(layers: dict[str, dict], outputs: list[str]) -> set[str]:
    """The layers the outputs depend on, through every inbound node."""
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in seen or name not in layers:
            continue
        seen.add(name)
        for node in layers[name].get("inbound_nodes", []):
            stack.extend(inbound[0] for inbound in node)
    return seen


def _refuse(what: str) -> None:
    raise ConversionError("WEIGHT_TARGET_MISMATCH", what + " (TF.js would refuse to load this model.json)",
                          "this is a converter bug: please report it with the model; nothing was written")
