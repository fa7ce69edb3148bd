"""Reshape and Permute layers, and layers run on a reshaped or permuted view of their input.

tfjs layers often accept fewer layouts than Flax modules (LayerNormalization
stops at rank 4, a time flip needs time last, ...). The exact fix is to change
the view, run the layers, and change it back: :func:`reshaped` and
:func:`permuted` build that sandwich, the last layer carrying the module's name.
"""
from __future__ import annotations

from typing import Callable

from topology.graph import LayerNode, Shape
from topology.layers.base import layer_base

# source layer name -> the layers that run on the view (the last one gives the result)
Body = Callable[[str], list[LayerNode]]


def reshape_node(name: str, shape: tuple[int, ...], inputs: list[str], origin: str) -> LayerNode:
    """A Reshape to ``shape`` (without batch).

    Example:
        >>> reshape_node("r", (4, 2), ["x"], "ln").config["target_shape"]
        [4, 2]
    """
    return LayerNode(name, "Reshape", layer_base(target_shape=[int(d) for d in shape]), list(inputs), [],
                     tuple(shape), origin)


def permute_node(name: str, dims: list[int], shape: tuple[int, ...], inputs: list[str], origin: str) -> LayerNode:
    """A Permute by ``dims`` (1-based, without batch) whose output has ``shape``.

    Example:
        >>> permute_node("p", [2, 1], (3, 4), ["x"], "rnn").config["dims"]
        [2, 1]
    """
    return LayerNode(name, "Permute", layer_base(dims=dims), list(inputs), [], tuple(shape), origin)


def reshaped(name: str, inputs: list[str], view: tuple[int, ...], shape: tuple[int, ...], origin: str,
             body: Body, view_name: str) -> list[LayerNode]:
    """``body`` run on ``inputs`` reshaped to ``view``, its result reshaped to ``shape`` as ``name``.

    Example:
        >>> norm = lambda source: [LayerNode("n.norm", "LayerNormalization", {}, [source])]
        >>> [(n.name, n.inputs) for n in reshaped("n", ["x"], (6, 4), (2, 3, 4), "ln", norm, "n.fold")]
        [('n.fold', ['x']), ('n.norm', ['n.fold']), ('n', ['n.norm'])]
    """
    first = reshape_node(view_name, view, inputs, origin)
    inner = body(first.name)
    return [first, *inner, reshape_node(name, shape, [inner[-1].name], origin)]


def permuted(name: str, inputs: list[str], dims: list[int], shape: tuple[int, ...], origin: str,
             body: Body, view_name: str) -> list[LayerNode]:
    """``body`` run on ``inputs`` (of ``shape``) permuted by ``dims``, its result permuted back as ``name``.

    Example:
        >>> flip = lambda source: [LayerNode("r.flip", "Dense", {}, [source])]
        >>> [(n.name, n.config["dims"], n.output_shape) for n in permuted("r", ["x"], [2, 1], (5, 3), "", flip,
        ...                                                               "r.time_last") if n.class_name == "Permute"]
        [('r.time_last', [2, 1], (3, 5)), ('r', [2, 1], (5, 3))]
    """
    view: Shape = tuple(shape[d - 1] for d in dims)
    inverse = [dims.index(d) + 1 for d in range(1, len(dims) + 1)]
    first = permute_node(view_name, list(dims), view, inputs, origin)
    inner = body(first.name)
    return [first, *inner, permute_node(name, inverse, shape, [inner[-1].name], origin)]
