"""Infer a Sequential layer graph from a parameter tree alone (no model code).

A checkpoint holds no architecture, so this front end applies the template of
the Flax MNIST example and says so: layers ``Conv_i`` then ``Dense_j`` in index
order, SAME stride-1 convolutions, an activation after every layer but the
last, 2x2 pooling after each convolution, a flatten before the first Dense.
The input shape is solved from the first conv's in-channels and the first
Dense's in-features. Every assumption becomes a notice. Anything that does not
fit stops with TOPOLOGY_NOT_INFERRED: pass the model code instead.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from topology.graph import InputSpec, LayerGraph, LayerNode
from topology.layers import kind
from topology.vocabulary.errors import ConversionError, Notices
from topology.vocabulary.misfit import Misfit
from topology.vocabulary.tensors import TensorRef, TreePath, path_str
from topology.vocabulary.variables import Variables

# Activations the template accepts: the Flax function name -> the tfjs name,
# chosen so that both compute the same function exactly.
TEMPLATE_ACTIVATIONS = {
    "relu": "relu", "relu6": "relu6", "elu": "elu", "selu": "selu", "sigmoid": "sigmoid",
    "tanh": "tanh", "softplus": "softplus", "softsign": "softsign", "silu": "swish",
    "swish": "swish", "gelu_exact": "gelu", "linear": "linear",
}
POOL_CHOICES = ("avg", "max", "none")
_AUTO_NAME = re.compile(r"^(Conv|Dense)_(\d+)$")
# A solved input larger than this per spatial axis means the template does not fit the model (issue 14, point 9).
MAX_SOLVED_SIDE = 1024
_HINT_MODULE = "pass the model code with --module path/to/model.py:Model so the exact topology can be traced"


@dataclass(frozen=True)
class TemplateOptions:
    """User overrides of the template's assumptions.

    Example:
        >>> TemplateOptions(input_shape=(28, 28, 1), pool="max").activation
        'relu'
    """

    input_shape: tuple[int, ...] | None = None
    activation: str = "relu"
    pool: str = "avg"


@dataclass(frozen=True)
class _Layer:
    name: str
    kind: str  # "conv" | "dense"
    kernel: TensorRef
    bias: TensorRef | None

    @property
    def fan_in(self) -> int:
        return self.kernel.shape[-2]

    @property
    def fan_out(self) -> int:
        return self.kernel.shape[-1]


def infer_graph(variables: Variables, options: TemplateOptions, notices: Notices) -> LayerGraph:
    """Build the Sequential graph of a plain CNN or MLP from its parameters.

    Example:
        >>> graph = infer_graph(variables, TemplateOptions(), Notices())   # doctest: +SKIP
        >>> [layer.class_name for layer in graph.layers]                   # doctest: +SKIP
        ['Conv2D', 'AveragePooling2D', 'Conv2D', 'AveragePooling2D', 'Flatten', 'Dense', 'Dense']
    """
    if options.activation not in TEMPLATE_ACTIVATIONS:
        raise ConversionError(
            "UNSUPPORTED_ACTIVATION",
            f"--activation {options.activation} is not one the template can write exactly",
            f"choose one of {', '.join(TEMPLATE_ACTIVATIONS)}, or {_HINT_MODULE}",
        )
    if options.pool not in POOL_CHOICES:
        raise ConversionError("BAD_OPTION", f"--pool {options.pool}", f"choose one of {', '.join(POOL_CHOICES)}")
    if variables.get("batch_stats"):
        raise ConversionError(
            "TOPOLOGY_NOT_INFERRED",
            "the checkpoint has batch_stats (BatchNorm), which the parameter-tree template cannot place",
            _HINT_MODULE,
        )
    layers = _ordered_layers(_collect_layers(variables.params), notices)
    convs = [layer for layer in layers if layer.kind == "conv"]
    denses = [layer for layer in layers if layer.kind == "dense"]
    _check_chain(convs)
    _check_chain(denses)
    input_shape = _input_shape(convs, denses, options, notices)
    _note_template(convs, denses, options, notices)
    return _build(convs, denses, input_shape, options)


def _collect_layers(params: dict[TreePath, TensorRef]) -> list[_Layer]:
    if not params:
        raise ConversionError("NO_PARAMS", "the checkpoint holds no parameters", "check what was saved")
    grouped: dict[str, dict[str, TensorRef]] = {}
    for path, ref in params.items():
        if len(path) != 2:
            raise ConversionError(
                "TOPOLOGY_NOT_INFERRED",
                f"params/{path_str(path)} is nested {len(path) - 1} modules deep; "
                "the template only knows flat Conv/Dense stacks",
                _HINT_MODULE,
            )
        grouped.setdefault(path[0], {})[path[1]] = ref
    layers = []
    for name, variables in grouped.items():
        extra = sorted(set(variables) - {"kernel", "bias"})
        kernel = variables.get("kernel")
        if extra or kernel is None:
            raise ConversionError(
                "TOPOLOGY_NOT_INFERRED",
                f"params/{name} has variables {sorted(variables)}; the template knows only Conv and Dense "
                "layers (kernel, bias)",
                _HINT_MODULE,
            )
        ndim = len(kernel.shape)
        if ndim not in (2, 3, 4, 5):
            raise ConversionError(
                "TOPOLOGY_NOT_INFERRED",
                f"params/{name}/kernel has shape {kernel.shape}; a Dense kernel is 2-D and a Conv kernel 3- to 5-D",
                _HINT_MODULE,
            )
        bias = variables.get("bias")
        if bias is not None and tuple(bias.shape) != (kernel.shape[-1],):
            raise ConversionError(
                "SHAPE_MISMATCH",
                f"params/{name}/bias has shape {bias.shape} but the kernel {kernel.shape} has "
                f"{kernel.shape[-1]} outputs",
                "check that the checkpoint belongs to this model",
            )
        layers.append(_Layer(name, "dense" if ndim == 2 else "conv", kernel, bias))
    return layers


def _ordered_layers(layers: list[_Layer], notices: Notices) -> list[_Layer]:
    matches = {layer.name: _AUTO_NAME.match(layer.name) for layer in layers}
    if all(matches.values()):
        for layer in layers:
            named = "conv" if matches[layer.name].group(1) == "Conv" else "dense"
            if named != layer.kind:
                raise ConversionError(
                    "TOPOLOGY_NOT_INFERRED",
                    f"params/{layer.name}/kernel has shape {layer.kernel.shape}, which is not a "
                    f"{matches[layer.name].group(1)} kernel",
                    _HINT_MODULE,
                )
        kind_rank = {"conv": 0, "dense": 1}
        return sorted(layers, key=lambda l: (kind_rank[l.kind], int(matches[l.name].group(2))))
    notices.assume(
        "LAYER_ORDER",
        "layer names are not Flax's automatic Conv_i/Dense_i, so the checkpoint's order was used: "
        + " -> ".join(layer.name for layer in layers),
    )
    seen_dense = False
    for layer in layers:
        if layer.kind == "dense":
            seen_dense = True
        elif seen_dense:
            raise ConversionError(
                "TOPOLOGY_NOT_INFERRED",
                f"params/{layer.name} is a convolution stored after a Dense layer",
                _HINT_MODULE,
            )
    return layers


def _check_chain(layers: list[_Layer]) -> None:
    for before, after in zip(layers, layers[1:]):
        if after.fan_in != before.fan_out:
            raise ConversionError(
                "SHAPE_MISMATCH",
                f"params/{after.name}/kernel {after.kernel.shape} takes {after.fan_in} inputs but "
                f"params/{before.name}/kernel {before.kernel.shape} gives {before.fan_out}",
                "the layers do not form a chain in this order; " + _HINT_MODULE,
            )


def _input_shape(convs: list[_Layer], denses: list[_Layer], options: TemplateOptions, notices: Notices) -> tuple[int, ...]:
    if options.input_shape is not None:
        shape = tuple(options.input_shape)
        _check_given_shape(shape, convs, denses, options)
        return shape
    if not convs:
        shape = (denses[0].fan_in,)
    else:
        shape = _solve_conv_input(convs, denses, options)
    notices.assume("INPUT_SHAPE", f"input shape {_fmt(shape)} solved from the parameter shapes (override with --input-shape)")
    return shape


def _solve_conv_input(convs: list[_Layer], denses: list[_Layer], options: TemplateOptions) -> tuple[int, ...]:
    spatial = len(convs[0].kernel.shape) - 2
    channels = convs[0].fan_in
    if not denses:
        raise ConversionError(
            "INPUT_SHAPE_REQUIRED",
            "a model of convolutions only does not fix its input size",
            "pass --input-shape, e.g. --input-shape 28,28,1",
        )
    features, last_channels = denses[0].fan_in, convs[-1].fan_out
    cells = features // last_channels
    side = round(cells ** (1 / spatial))
    if features % last_channels or side ** spatial != cells:
        raise ConversionError(
            "INPUT_SHAPE_REQUIRED",
            f"params/{denses[0].name}/kernel takes {features} features, which is not "
            f"{last_channels} channels times a square grid, so the input size cannot be solved",
            "pass --input-shape, e.g. --input-shape 28,28,1",
        )
    scale = 2 ** len(convs) if options.pool != "none" else 1
    shape = (*(side * scale,) * spatial, channels)
    if side * scale > MAX_SOLVED_SIDE:
        # e.g. VGG-16: 13 convolutions, each assumed to halve the size, give 57344x57344x3; real deep
        # models pool after some convolutions only, so the template's answer would be absurd.
        raise ConversionError(
            "INPUT_SHAPE_REQUIRED",
            f"the template's {options.pool} pooling after each of the {len(convs)} convolutions would need an "
            f"input of {_fmt(shape)}, larger than {MAX_SOLVED_SIDE} per axis: the parameters do not fix the "
            "input size of a model this deep",
            "pass --input-shape (e.g. --input-shape 224,224,3) and --pool, or " + _HINT_MODULE,
        )
    return shape


def _check_given_shape(shape: tuple[int, ...], convs: list[_Layer], denses: list[_Layer], options: TemplateOptions) -> None:
    if convs:
        spatial = len(convs[0].kernel.shape) - 2
        if len(shape) != spatial + 1 or shape[-1] != convs[0].fan_in:
            raise Misfit(
                "INPUT_SHAPE_MISMATCH",
                f"--input-shape {_fmt(shape)} does not fit params/{convs[0].name}/kernel {convs[0].kernel.shape}, "
                f"which expects {spatial} spatial axes and {convs[0].fan_in} channels",
                f"pass a shape like {_fmt((28,) * spatial + (convs[0].fan_in,))}", refused_by="input",
            )
        if denses:
            cells = math.prod(_pooled(d, len(convs), options.pool) for d in shape[:-1])
            if cells * convs[-1].fan_out != denses[0].fan_in:
                raise Misfit(
                    "INPUT_SHAPE_MISMATCH",
                    f"--input-shape {_fmt(shape)} gives {cells * convs[-1].fan_out} features before "
                    f"params/{denses[0].name}, whose kernel {denses[0].kernel.shape} takes {denses[0].fan_in}",
                    "leave --input-shape out to have it solved, or check --pool", refused_by="input",
                )
    elif math.prod(shape) != denses[0].fan_in:
        raise Misfit(
            "INPUT_SHAPE_MISMATCH",
            f"--input-shape {_fmt(shape)} has {math.prod(shape)} values but params/{denses[0].name}/kernel "
            f"{denses[0].kernel.shape} takes {denses[0].fan_in}",
            f"pass --input-shape {denses[0].fan_in} or leave it out", refused_by="input",
        )


def _pooled(size: int, times: int, pool: str) -> int:
    for _ in range(times if pool != "none" else 0):
        size //= 2
    return size


def _note_template(convs: list[_Layer], denses: list[_Layer], options: TemplateOptions, notices: Notices) -> None:
    notices.assume(
        "ACTIVATION",
        f"{options.activation} after every layer except the last, whose output is linear (override with --activation)",
    )
    if convs:
        notices.assume("CONV_PADDING", "convolutions use stride 1 and SAME padding (the Flax default)")
        pool = {"avg": "2x2 average pooling", "max": "2x2 max pooling", "none": "no pooling"}[options.pool]
        notices.assume("POOLING", f"{pool} after each convolution (override with --pool)")
        if denses:
            notices.assume("FLATTEN", "features are flattened in channels-last order before the first Dense")


def _build(convs: list[_Layer], denses: list[_Layer], input_shape: tuple[int, ...], options: TemplateOptions) -> LayerGraph:
    act = TEMPLATE_ACTIVATIONS[options.activation]
    nodes: list[LayerNode] = []
    previous, shape = "input", input_shape
    last = (denses or convs)[-1]

    def add(node: LayerNode) -> None:
        nonlocal previous
        node.inputs = [previous]
        nodes.append(node)
        previous = node.name

    for index, conv in enumerate(convs):
        spatial = len(conv.kernel.shape) - 2
        shape = (*shape[:-1], conv.fan_out)
        attrs = dict(filters=conv.fan_out, kernel_size=tuple(conv.kernel.shape[:spatial]),
                     use_bias=conv.bias is not None, activation="linear" if conv is last else act)
        add(kind("conv").node(conv.name, attrs, [], _vars(conv), f"params/{conv.name}", shape))
        if options.pool != "none":
            shape = (*(d // 2 for d in shape[:-1]), shape[-1])
            attrs = dict(pool_size=(2,) * spatial, strides=(2,) * spatial, padding="valid", op=options.pool)
            add(kind("pool").node(f"{options.pool}_pool_{index}", attrs, [], {}, "template pooling", shape))
    if len(input_shape) > 1 and denses:
        shape = (math.prod(shape),)
        add(kind("flatten").node("flatten", {}, [], {}, "template flatten", shape))
    for dense in denses:
        shape = (dense.fan_out,)
        attrs = dict(units=dense.fan_out, use_bias=dense.bias is not None,
                     activation="linear" if dense is last else act)
        add(kind("dense").node(dense.name, attrs, [], _vars(dense), f"params/{dense.name}", shape))
    return LayerGraph([InputSpec("input", tuple(input_shape))], nodes, [previous])


def _vars(layer: _Layer) -> dict[tuple[str, str], TensorRef]:
    found = {("params", "kernel"): layer.kernel}
    if layer.bias is not None:
        found[("params", "bias")] = layer.bias
    return found


def _fmt(shape: tuple[int, ...]) -> str:
    return ",".join(str(d) for d in shape)
