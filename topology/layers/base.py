"""What a layer kind declares: its Keras class, its config and its weight mapping.

Each file in ``topology/layers/`` registers one :class:`LayerKind`. Front ends
(parameter-tree inference, module tracing) only choose a kind and its
attributes; everything tfjs-specific about the layer lives in that one file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from topology.graph import LayerNode, Shape, WeightBinding
from topology.trace_kit.call_context import CallContext
from topology.vocabulary.tensors import TensorRef

# Initializers are deserialized by tfjs even when every weight is loaded, so
# write one that both tfjs and tf-keras know; the values are never used.
ZEROS = {"class_name": "Zeros", "config": {}}
ONES = {"class_name": "Ones", "config": {}}


def layer_base(**config: Any) -> dict:
    """Keys every Keras-2 layer config carries, followed by ``config``.

    Example:
        >>> layer_base(units=3)
        {'trainable': True, 'dtype': 'float32', 'units': 3}
    """
    return {"trainable": True, "dtype": "float32", **config}


@dataclass(frozen=True)
class Case:
    """A test case a layer kind or op family declares: a small model that uses it.

    ``build`` returns a Linen or NNX module (it imports flax itself, so that
    declaring cases costs nothing at import time). The test matrix converts it,
    runs it in real TF.js and compares with JAX (random variables, batch 1 and 3).

    Example:
        >>> Case("dense", lambda: None, (4,)).input_dtype
        'float32'
    """

    name: str
    build: Callable[[], Any]
    input_shape: Any  # one shape, or a list of shapes for several inputs
    input_dtype: str = "float32"
    input_range: tuple[float, float] = (-2.0, 2.0)  # ints: token ids in [low, high)


@dataclass(frozen=True)
class ParamMap:
    """How one Flax variable becomes one tfjs weight.

    Example:
        >>> ParamMap("scale", "gamma").keras
        'gamma'
    """

    flax: str  # variable name inside the Flax module, e.g. "kernel"
    keras: str  # weight name inside the tfjs layer, e.g. "kernel"
    collection: str = "params"
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    optional: bool = False  # absent when e.g. use_bias=False


@dataclass(frozen=True)
class FoldTarget:
    """A Keras layer a kind writes into which a following per-channel affine map folds (``--optimize``:
    BatchNormalization, Rescaling): ``kernel`` is the weight whose last ``channel_axes`` axes are the output
    channel (DepthwiseConv2D: (C, m), output channel c*m + j); the layer's bias is that channel's too.

    Example:
        >>> FoldTarget("DepthwiseConv2D", "depthwise_kernel", channel_axes=2).kernel
        'depthwise_kernel'
    """

    keras_class: str
    kernel: str = "kernel"
    channel_axes: int = 1


@dataclass(frozen=True)
class LayerKind:
    """A Flax layer kind and its tfjs counterpart.

    Example:
        >>> from topology.layers import kind
        >>> kind("dense").keras_class
        'Dense'
    """

    key: str
    keras_class: str | Callable[[dict], str]  # a callable picks e.g. Conv1D/2D/3D from attrs
    flax_modules: tuple[str, ...]
    make_config: Callable[..., dict]
    params: tuple[ParamMap, ...] = ()
    summary: str = ""
    # Module classes traced as this layer, as "module:Class" (imported only when tracing).
    flax_classes: tuple[str, ...] = ()
    # The module's attributes -> keyword arguments of make_config (and of expand).
    read_attrs: Callable[[Any, CallContext], dict] | None = None
    # For constructs that need several tfjs layers: (kind, name, attrs, inputs, variables,
    # origin, output_shape) -> [LayerNode, ...], the last one producing the output.
    expand: Callable[..., list[LayerNode]] | None = None
    # For calls that return a tuple (read_attrs sets attrs["_multi_output"]): (name, attrs) -> the
    # tensor reference (topology.graph.tensor_ref) of each flattened leaf, e.g. an RNN's carry.
    output_refs: Callable[[str, dict], list[str]] | None = None
    # Array keyword arguments of a call that the kind composes (attention's mask=): the tracer marks them
    # and the builder records what they are under attrs["_side"]. Other array keywords are refused.
    side_keywords: tuple[str, ...] = ()
    # The Keras layers of this kind a following per-channel affine map folds into (topology/optimize/affine.py).
    fold_targets: tuple[FoldTarget, ...] = ()
    # () -> the kind's test cases (a function, so flax is imported only by the tests).
    cases: Callable[[], tuple[Case, ...]] = field(default=lambda: (), compare=False)

    def node(
        self,
        name: str,
        attrs: dict,
        inputs: list[str],
        variables: dict[tuple[str, str], TensorRef],
        origin: str = "",
        output_shape: Shape | None = None,
    ) -> LayerNode:
        """Build the layer node, binding weights from ``variables[(collection, flax_name)]``.

        Raises KeyError naming the missing variable when a required one is absent.
        """
        weights = []
        for param in self.params:
            tensor = variables.get((param.collection, param.flax))
            if tensor is None:
                if param.optional:
                    continue
                raise KeyError(f"{param.collection}/{origin}/{param.flax}")
            weights.append(
                WeightBinding(param.keras, keras_shape(tensor, param.transform), tensor, param.transform)
            )
        config_attrs = {k: v for k, v in attrs.items() if not k.startswith("_")}  # _x: trace facts
        return LayerNode(
            name, self.class_for(config_attrs), self.make_config(**config_attrs), inputs, weights, output_shape, origin
        )

    def nodes(self, name: str, attrs: dict, inputs: list[str], variables: dict[tuple[str, str], TensorRef],
              origin: str = "", output_shape: Shape | None = None) -> list[LayerNode]:
        """The tfjs layers for one use of this kind; the last one gives the output."""
        if self.expand is not None:
            return self.expand(self, name, attrs, inputs, variables, origin, output_shape)
        return [self.node(name, attrs, inputs, variables, origin, output_shape)]

    def class_for(self, attrs: dict) -> str:
        return self.keras_class(attrs) if callable(self.keras_class) else self.keras_class


def keras_shape(tensor: TensorRef, transform: Callable | None) -> tuple[int, ...]:
    """Shape after ``transform`` without reading data (applied to a zero-stride view).

    Example:
        >>> t = TensorRef(("k",), (3, 2), np.dtype("float32"), None)
        >>> keras_shape(t, np.transpose)
        (2, 3)
    """
    if transform is None:
        return tuple(tensor.shape)
    view = np.broadcast_to(np.zeros((), dtype=np.float32), tensor.shape)
    return tuple(int(d) for d in transform(view).shape)


def bind(variables: dict, collection: str, flax_name: str, keras_name: str, origin: str,
         transform: Callable | None = None) -> WeightBinding:
    """The weight ``keras_name`` from ``variables[(collection, flax_name)]``; KeyError names the path.

    Example:
        >>> bind({}, "params", "scale", "gamma", "ln")
        Traceback (most recent call last):
        KeyError: 'params/ln/scale'
    """
    tensor = variables.get((collection, flax_name))
    if tensor is None:
        raise KeyError(f"{collection}/{origin}/{flax_name}")
    return WeightBinding(keras_name, keras_shape(tensor, transform), tensor, transform)
