"""Layer normalization over the last axis without tfjs' ``LayerNormalization`` layer, which tiles.

tfjs 4.22's ``LayerNormalization.call`` tiles the mean, the variance, gamma and
beta to the full input shape on every call (a workaround for its cpu backend's
batchNorm, tfjs issue 2120), and the wasm backend's Tile costs more than the
rest of the layer: about 10 ms per LayerNorm of a (128, 128) input in Node wasm,
half of BERT-tiny's prediction. The same values come from layers that broadcast
a (rows, 1) tensor instead (x of shape (..., n), normalized over n)::

    c = Add([x, Dense(1, kernel=-1/n)(x)])                 # x - mean(x), broadcast add
    z = Concatenate([c, Rescaling(0, offset=k)(mean)])     # k = sqrt(n * eps)
    r = Dot(axes=-1, normalize=True)([z, e])               # e = the unit vector on z's last entry
      = k / sqrt(sum(c^2) + n * eps) = sqrt(eps) / sqrt(var(x) + eps)
    y = BatchNormalization(gamma, beta, mean 0, var 1, eps 0)(Multiply([c, Rescaling(1/sqrt(eps))(r)]))

``Dot(normalize=True)`` is tfjs' only layer with a square root of a per-row
sum (``l2Normalize``: ``x / sqrt(max(sum(x^2), 1e-7))``), so appending
``sqrt(n * eps)`` to the centred row puts the epsilon exactly where layer
normalization has it; the unit vector ``e`` (a zero-kernel Dense of the rows'
mean, bias = e) reads the normalized last entry back. It is the same arithmetic
as tfjs' own layer (mean, centred sum of squares, rsqrt) up to float32
rounding, about 1e-6 relative, and 5-8x faster in wasm (docs/benchmarks.md).
l2Normalize floors the sum at 1e-7; the padded row's sum is at least
``n * eps``, and when that is below 1e-6 (ViT's eps 1e-12) the padded row is
scaled by ``a = sqrt(1e-6 / (n * eps))`` first (one Rescaling; ``r`` does not
change with the scale), so the floor is never reached. Used for rank 2-4 inputs
normalized over the last axis, any epsilon > 0.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from topology.graph import LayerNode, WeightBinding
from topology.layers.base import layer_base
from topology.layers.batchnorm import batch_norm_config
from topology.layers.dense import dense_config
from topology.layers.views import reshaped

L2_NORMALIZE_FLOOR = 1e-7  # tfjs-layers' epsilon() inside l2Normalize: max(sum(x^2), 1e-7)
_LEAST_SUM = 10 * L2_NORMALIZE_FLOOR  # the padded row's sum of squares is kept at least this


def tile_free_applies(width: int, epsilon: float, rank: int) -> bool:
    """Whether the broadcast composition is exact for a normalized axis of ``width`` on a rank-``rank`` input.

    Example:
        >>> tile_free_applies(128, 1e-12, 3), tile_free_applies(4, 0.0, 3), tile_free_applies(4, 1e-6, 5)
        (True, False, False)
    """
    return 2 <= rank <= 4 and width >= 2 and epsilon > 0


def tile_free_layer_norm(name: str, in_shape: tuple[int, ...], inputs: list[str], epsilon: float,
                         gamma: WeightBinding | None, beta: WeightBinding | None, origin: str) -> list[LayerNode]:
    """Layers normalizing ``inputs[0]`` (``in_shape`` with batch) over its last axis, then ``* gamma + beta``.

    The last node is named ``name``; ``gamma``/``beta`` are the Flax scale/bias bindings (None: 1/0).

    Example:
        >>> nodes = tile_free_layer_norm("ln", (None, 5, 8), ["x"], 1e-6, None, None, "ln")
        >>> [n.class_name for n in nodes][-3:], nodes[-1].name
        (['Rescaling', 'Multiply', 'BatchNormalization'], 'ln')
    """
    shape = tuple(in_shape[1:])
    width = int(shape[-1])
    if len(shape) == 3:  # (h, w, n): rows of n, and back
        rows = (shape[0] * shape[1], width)
        return reshaped(name, inputs, rows, shape, origin,
                        lambda source: _nodes(name, rows, source, epsilon, gamma, beta, origin, f"{name}.norm"),
                        f"{name}.rows")
    return _nodes(name, shape, inputs[0], epsilon, gamma, beta, origin, name)


def _nodes(name: str, shape: tuple[int, ...], source: str, epsilon: float, gamma: WeightBinding | None,
           beta: WeightBinding | None, origin: str, last: str) -> list[LayerNode]:
    width = int(shape[-1])
    row = shape[:-1]  # () for a (batch, n) input, (length,) for (batch, length, n)
    nodes: list[LayerNode] = []

    def add(suffix: str | None, class_name: str, config: dict, layer_inputs: list[str], out_shape: tuple,
            weights: list[WeightBinding] | None = None) -> str:
        nodes.append(LayerNode(f"{name}.{suffix}" if suffix else last, class_name, config, layer_inputs,
                               weights or [], tuple(out_shape), origin))
        return nodes[-1].name

    def const(weight: str, values: np.ndarray) -> WeightBinding:
        values = np.asarray(values, np.float32)
        return WeightBinding(weight, values.shape, constant=values)

    negative_mean = add("negative_mean", "Dense", dense_config(1, False), [source], (*row, 1),
                        [const("kernel", np.full((width, 1), -1.0 / width))])
    centred = add("centred", "Add", layer_base(), [source, negative_mean], shape)
    scale = max(1.0, math.sqrt(_LEAST_SUM / (width * epsilon)))  # keeps sum(z^2) >= n * eps * scale^2 off the floor
    scaled = centred if scale == 1.0 else add(
        "centred_scaled", "Rescaling", layer_base(scale=scale, offset=0.0), [centred], shape)
    # 0 * (-mean) + k: a Rescaling of the (rows, 1) mean costs nothing; a Dense(1) with a bias is a slow kernel
    epsilon_column = add("epsilon_column", "Rescaling",
                         layer_base(scale=0.0, offset=scale * math.sqrt(width * epsilon)), [negative_mean], (*row, 1))
    padded = add("padded", "Concatenate", layer_base(axis=-1), [scaled, epsilon_column], (*row, width + 1))
    unit = np.zeros(width + 1)
    unit[-1] = 1.0
    if row:  # (batch, length, n): one row e per example (Dot needs equal batch sizes), from the rows' mean
        pooled = add("pooled", "GlobalAveragePooling1D", layer_base(data_format="channels_last"), [source], (width,))
        flat = add("unit", "Dense", dense_config(width + 1, True), [pooled], (width + 1,),
                   [const("kernel", np.zeros((width, width + 1))), const("bias", unit)])
        selector = add("selector", "Reshape", layer_base(target_shape=[1, width + 1]), [flat], (1, width + 1))
    else:
        selector = add("selector", "Dense", dense_config(width + 1, True), [source], (width + 1,),
                       [const("kernel", np.zeros((width, width + 1))), const("bias", unit)])
    axes = [len(shape), len(shape)]
    ratio = add("ratio", "Dot", layer_base(axes=axes, normalize=True), [padded, selector], (*row, 1))
    inverse_std = add("inverse_std", "Rescaling", layer_base(scale=1.0 / math.sqrt(epsilon), offset=0.0), [ratio],
                      (*row, 1))
    normalized = add("normalized", "Multiply", layer_base(), [centred, inverse_std], shape)
    weights = [gamma or const("gamma", np.ones(width)), beta or const("beta", np.zeros(width)),
               const("moving_mean", np.zeros(width)), const("moving_variance", np.ones(width))]
    add(None, "BatchNormalization", batch_norm_config(-1, epsilon=0.0), [normalized], shape, weights)
    return nodes
