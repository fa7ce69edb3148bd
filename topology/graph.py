"""The layer graph every front end builds and the emitter and weight writer consume.

A :class:`LayerGraph` is a DAG of :class:`LayerNode` objects in topological
order. Each node carries a complete Keras-2 layer config and the weights it
needs, bound lazily to checkpoint tensors, so that the writer can stream them.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from topology.vocabulary.tensors import TensorRef

Shape = tuple  # a Keras shape without the batch dimension; None for unknown sizes


def tensor_ref(layer: str, index: int = 0) -> str:
    """How ``LayerNode.inputs`` and ``LayerGraph.outputs`` name output ``index`` of ``layer``.

    Most layers have one output, named by the layer alone; a layer with several
    (an LSTM with ``return_state``: output, h, c) adds ``:index``. ``:`` is never
    part of a tfjs layer name, so the two cannot be confused.

    Example:
        >>> tensor_ref("lstm", 0), tensor_ref("lstm", 2)
        ('lstm', 'lstm:2')
    """
    return layer if index == 0 else f"{layer}:{index}"


def split_ref(ref: str) -> tuple[str, int]:
    """(layer name, output index) of a tensor reference made by :func:`tensor_ref`.

    Example:
        >>> split_ref("lstm:2"), split_ref("dense")
        (('lstm', 2), ('dense', 0))
    """
    layer, sep, index = ref.rpartition(":")
    if sep and layer and index.isdigit():
        return layer, int(index)
    return ref, 0


@dataclass(frozen=True)
class Derived:
    """Values computed from other weights when they are written (e.g. a BatchNorm folded into a kernel).

    ``compute`` receives the materialized ``inputs`` (Keras layout, original
    dtype) and returns the new values; it runs only when the writer reaches
    this weight, so memory stays bounded by a few tensors.

    Example:
        >>> one = WeightBinding("b", (2,), constant=np.ones(2, "float32"))
        >>> Derived("double", (one,), lambda b: b * 2).compute()
        array([2., 2.], dtype=float32)
    """

    label: str  # what computed it, for messages: "fold_batchnorm"
    inputs: tuple["WeightBinding", ...]
    fn: Callable[..., np.ndarray] = field(compare=False)

    def compute(self) -> np.ndarray:
        return self.fn(*(binding.materialize() for binding in self.inputs))

    @property
    def origin(self) -> str:
        return f"{self.label}({', '.join(binding.origin for binding in self.inputs)})"


@dataclass(frozen=True, slots=True)  # slots: one per weight, and a model may have 100,000s
class WeightBinding:
    """One tfjs weight of a layer and where its values come from.

    Either ``tensor`` (read lazily from the checkpoint, then ``transform``-ed into
    Keras layout), ``constant`` (weights the converter synthesises) or
    ``derived`` (computed from other bindings at write time, by a graph rewrite).

    Example:
        >>> WeightBinding("bias", (2,), constant=np.zeros(2, "float32")).materialize()
        array([0., 0.], dtype=float32)
    """

    name: str  # the weight's name inside its layer, e.g. "kernel"
    shape: tuple[int, ...]  # its shape in Keras layout
    tensor: TensorRef | None = None
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    constant: np.ndarray | None = None
    derived: Derived | None = None

    @property
    def origin(self) -> str:
        if self.derived is not None:
            return self.derived.origin
        return "/".join(self.tensor.path) if self.tensor is not None else "(constant)"

    def materialize(self) -> np.ndarray:
        """Load (or build) the values in Keras layout; dtype is left to the writer."""
        if self.derived is not None:
            array = self.derived.compute()
        else:
            array = self.constant if self.tensor is None else self.tensor.load()
        if self.transform is not None:
            array = self.transform(array)
        return np.ascontiguousarray(array).reshape(self.shape)


@dataclass(slots=True)  # one per layer: no per-instance dict
class LayerNode:
    """A Keras layer: class, full config, inbound layers and weights.

    Example:
        >>> n = LayerNode("dense_0", "Dense", {"units": 3}, inputs=["input"])
        >>> n.param_count
        0
    """

    name: str
    class_name: str
    config: dict  # every Keras-2 config key except ``name``, written explicitly
    inputs: list[str] = field(default_factory=list)
    weights: list[WeightBinding] = field(default_factory=list)
    output_shape: Shape | None = None
    origin: str = ""  # the Flax path or construct it was made from

    @property
    def param_count(self) -> int:
        return sum(math.prod(w.shape) for w in self.weights)


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, shape without batch, dtype.

    Example:
        >>> InputSpec("input", (28, 28, 1)).batch_shape
        [None, 28, 28, 1]
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def batch_shape(self) -> list:
        # A per-example scalar (shape ()) is declared (batch, 1): tfjs' predict expands 1-D inputs so.
        return [None, *self.shape] if self.shape else [None, 1]


@dataclass
class LayerGraph:
    """Inputs, layers in topological order, and the names of the output layers.

    Example:
        >>> g = LayerGraph([InputSpec("input", (4,))], [LayerNode("d", "Dense", {}, ["input"])], ["d"])
        >>> g.is_chain()
        True
    """

    inputs: list[InputSpec]
    layers: list[LayerNode]
    outputs: list[str]
    rewrites: list[dict] = field(default_factory=list)  # what topology.optimize did, in order
    unused: list[str] = field(default_factory=list)  # origins of layers dropped by prune_unused

    def is_chain(self) -> bool:
        """True when the graph is one input feeding a straight line of layers (a Sequential)."""
        if len(self.inputs) != 1 or len(self.outputs) != 1 or not self.layers:
            return False
        previous = self.inputs[0].name
        for layer in self.layers:
            if layer.inputs != [previous]:
                return False
            previous = layer.name
        return self.outputs == [previous]

    @property
    def param_count(self) -> int:
        return sum(layer.param_count for layer in self.layers)

    def weight_bindings(self) -> list[tuple[str, WeightBinding]]:
        """Every weight as (``<layer>/<weight>`` manifest name, binding), in layer order."""
        return [(f"{layer.name}/{w.name}", w) for layer in self.layers for w in layer.weights]


def prune_unused(graph: LayerGraph) -> LayerGraph:
    """``graph`` without the layers no output depends on; their origins are added to ``graph.unused``.

    A result computed and thrown away (GPT-Neo calls a module twice and keeps the second result)
    must not be written: TF.js builds the model from its outputs backwards, so the weights of
    such a layer would have no target variable and the model would not load.

    Example:
        >>> used, thrown = LayerNode("b", "Dense", {}, ["input"]), LayerNode("a", "Dense", {}, ["input"], origin="A")
        >>> g = prune_unused(LayerGraph([InputSpec("input", (4,))], [thrown, used], ["b"]))
        >>> [layer.name for layer in g.layers], g.unused
        (['b'], ['A'])
        >>> first, second = LayerNode("ln", "Dense", {}, ["input"]), LayerNode("ln_2", "Dense", {}, ["input"])
        >>> [layer.name for layer in prune_unused(LayerGraph([InputSpec("input", (4,))], [first, second], ["ln_2"])).layers]
        ['ln']
    """
    needed = {split_ref(ref)[0] for ref in graph.outputs}
    for layer in reversed(graph.layers):
        if layer.name in needed:
            needed.update(split_ref(ref)[0] for ref in layer.inputs)
    kept = [layer for layer in graph.layers if layer.name in needed]
    dropped = [layer for layer in graph.layers if layer.name not in needed]
    graph.layers = kept
    graph.unused = [*graph.unused, *(layer.origin or layer.name for layer in dropped)]
    _reclaim_names(graph, {layer.name: layer.origin for layer in dropped})
    return graph


def _reclaim_names(graph: LayerGraph, freed: dict[str, str]) -> None:
    """A kept second call named ``ln_f_2`` takes back ``ln_f`` when the first call (same origin) was dropped."""
    taken = {layer.name for layer in graph.layers} | {spec.name for spec in graph.inputs}
    renamed: dict[str, str] = {}
    for layer in graph.layers:
        # a layer kind built of several layers names them "<name>.<part>": the part keeps its suffix
        head, dot, part = layer.name.partition(".")
        base, sep, index = head.rpartition("_")
        wanted = base + dot + part
        if sep and index.isdigit() and freed.get(wanted, None) == layer.origin and wanted not in taken:
            renamed[layer.name] = wanted
            taken.add(wanted)
            del freed[wanted]
            layer.name = wanted

    def rename(ref: str) -> str:
        layer, index = split_ref(ref)
        return tensor_ref(renamed.get(layer, layer), index)

    if renamed:
        for layer in graph.layers:
            layer.inputs = [rename(ref) for ref in layer.inputs]
        graph.outputs = [rename(ref) for ref in graph.outputs]
