"""Rewrites of the emitted graph that TF.js runs faster, each exact up to float rounding, in order:

1. ``fold_reshape``: a Reshape of a constant becomes the constant in the new shape (same bytes);
   a Reshape of a Reshape becomes one Reshape.
2. ``layernorm_stats`` (rewrites_norm.py): LayerNorm's statistics as JAX writes them (``max(0, mean(x²) - mean(x)²)``:
   Square, Sum, RealDiv, Sum, RealDiv, Square, Sub, Maximum, two Reshapes) become
   ``Mean(Square(x - Mean(x)))`` with kept dims (4 ops instead of 10; equal up to float rounding).
3. ``relu``: ``max(x, 0)`` (how JAX spells ReLU) becomes a ``Relu`` op: TF.js's wasm backend runs a
   binary op against a broadcast scalar several times slower (ResNet-18: 34 -> 24 ms in Node wasm).
4. ``cancel_scale``: ``x * c / c`` (a scalar constant, as a window sum times its size then divided
   by it: average pooling) becomes ``x``.
5. ``merge_duplicates``: nodes with the same op, inputs and attributes become one (the three
   Reshapes feeding q, k and v; an attention mask each layer rebuilds from the same input).
6. ``fold_affine``: a MatMul/Conv2D/DepthwiseConv2dNative followed by per-channel constant
   ``+ - * /`` (a bias, an inference BatchNorm ``(x - mean) * scale * rsqrt(var + eps) + bias``, a
   bias shaped like the heads, attention's 1/sqrt(d)) becomes one
   ``_FusedMatMul``/``_FusedConv2D``/``FusedDepthwiseConv2dNative`` whose kernel is scaled and
   whose bias is the offset, both computed when the weights are written.
7. ``fuse_activation``: a ReLU or sigmoid right after a fused op joins it.
8. ``fold_norm_affine`` (rewrites_norm.py): a LayerNorm's ``* gamma + beta`` whose output only feeds ``_FusedMatMul``s
   (pre-LN transformers: q, k, v; the MLP) goes into their kernels (``gamma`` scales the rows)
   and biases (``+ beta·W``): two full-size ops fewer per LayerNorm.
9. ``fold_transpose``: a Transpose of a Transpose becomes one Transpose (none when the two cancel);
   attention's products leave one where their output order is swapped back (ops/linalg.py).
10. ``gelu`` (rewrites_gelu.py): ``0.5·x·erfc(-x·√½)`` between two ``_FusedMatMul``s (6 ops and a
   Reshape pair) becomes ``t + t·erf(t)`` with ``t = x·√½`` (3 ops); √½ goes into both kernels.
11. ``fold_reshape`` again: ``fold_affine`` leaves Reshape pairs where it removed a bias between them.

``fold_scale`` (rewrites_heads.py) runs after ``fuse_activation``: a scalar ``*``/``/`` after a plain
``_FusedMatMul``, through Reshapes, goes into its weights; ``split_heads`` (rewrites_heads.py) after
``fold_transpose``: the per-head Reshape/Transpose/Unpack and Pack/Transpose/Reshape become
Reshape/Split and ConcatV2/Reshape, a packed masked Softmax one per head; then ``merge_qkv``
(rewrites_heads.py): q, k, v split into heads from one input become one matmul and one Split;
``gather_rows`` (rewrites_gather.py): an embedding's ``GatherV2`` becomes a guarded ``GatherNd``.

``softmax`` (rewrites_softmax.py) runs third: JAX's last-axis softmax in 8 ops becomes TF.js's ``Softmax``;
``softmax_transposed`` (rewrites_softmax.py) just before ``fold_transpose``: a cancelling Transpose pair
around a Softmax (the block-diagonal attention products' scores) goes.

Each applied rewrite is one record ``{"rewrite", "removed", "into"}`` in ``graph.rewrites``, shown
like ``--optimize``'s.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import numpy as np

from topology.graph import Derived, WeightBinding
from topology.graphdef.graph_index import GraphIndex, is_zero, prune_unread, rename_outputs, scalar_value
from topology.graphdef.nodes import GraphDef, attr_i, attr_shape, attr_strs
from topology.graphdef.prune import node_name
from topology.graphdef.rewrites_gather import gather_rows
from topology.graphdef.rewrites_gelu import gelu
from topology.graphdef.rewrites_heads import fold_scale, merge_qkv, split_heads
from topology.graphdef.rewrites_norm import fold_norm_affine, layernorm_stats
from topology.graphdef.rewrites_softmax import softmax, softmax_transposed

FUSABLE = {"MatMul": "_FusedMatMul", "Conv2D": "_FusedConv2D", "DepthwiseConv2dNative": "FusedDepthwiseConv2dNative"}
ACTIVATIONS = {"Relu": "Relu", "Sigmoid": "Sigmoid"}


def _set_const_shape(graph: GraphDef, name: str, shape: tuple) -> None:
    const = graph.consts[name]
    binding = const.binding
    if binding.constant is not None:
        binding = dataclasses.replace(binding, shape=shape, constant=binding.constant.reshape(shape))
    else:
        binding = dataclasses.replace(binding, shape=shape)
    graph.consts[name] = dataclasses.replace(const, shape=shape, binding=binding)
    node = next(n for n in graph.nodes if n["name"] == name)
    node["attr"]["value"]["tensor"]["tensorShape"] = attr_shape(shape)["shape"]


def fold_reshape(graph: GraphDef) -> None:
    index = GraphIndex(graph)
    dropped = set()
    for node in graph.nodes:
        if node["op"] != "Reshape":
            continue
        source, target = node["input"]
        target_const = index.const(target)
        const = index.const(source)
        if const is not None and target_const is not None and target_const.array is not None \
                and index.only_reader(const.name) is node:
            shape = [int(d) for d in target_const.array.reshape(-1)]
            if -1 in shape:
                known = int(np.prod([d for d in shape if d != -1], dtype=np.int64)) or 1
                shape[shape.index(-1)] = int(np.prod(const.shape, dtype=np.int64)) // known
            _set_const_shape(graph, const.name, tuple(shape))
            index.replace_reads(node["name"], const.name)
            dropped.add(node["name"])
            continue
        inner = index.by_name.get(node_name(source))
        if inner is not None and inner["op"] == "Reshape" and ":" not in source and index.only_reader(inner["name"]) is node:
            node["input"][0] = inner["input"][0]
            dropped.add(inner["name"])
    graph.nodes = [n for n in graph.nodes if n["name"] not in dropped]


def _channel_vector(const: Any, channels: int, split: tuple = ()) -> Callable[[np.ndarray], np.ndarray] | None:
    """How to read a per-channel vector from ``const`` (shape (..., 1, C), (C,) or a scalar), or None.

    ``split``: the trailing axes the channels were reshaped into, e.g. (3, 64) for a query projection
    reshaped to heads; then a const of shape (..., 1, 3, 64) is per channel too (row-major, as the reshape).
    """
    shape = tuple(const.shape)
    size = int(np.prod(shape, dtype=np.int64))
    if size == 1:
        return lambda a: np.full(channels, np.float32(a.reshape(-1)[0]), "float32")
    trailing = shape[next((i for i, d in enumerate(shape) if d != 1), len(shape)):]
    if size == channels and (shape[-1] == channels or (split and trailing == tuple(split[-len(trailing):])
                                                       and int(np.prod(split[-len(trailing):])) == channels)):
        return lambda a: np.asarray(a, "float32").reshape(channels)
    return None


def _split_channels(index: GraphIndex, reshape: dict | None, channels: int) -> tuple:
    """The trailing axes a Reshape after a MatMul splits its ``channels`` into ((): none or unknown)."""
    target = index.const(reshape["input"][1]) if reshape is not None else None
    if target is None or target.array is None:
        return ()
    dims, size = [], 1
    for d in reversed([int(v) for v in target.array.reshape(-1)]):
        if d <= 0 or size * d > channels:
            break
        dims.insert(0, d)
        size *= d
    return tuple(dims) if size == channels else ()


def fold_affine(graph: GraphDef) -> None:
    for node in list(graph.nodes):
        index = GraphIndex(graph)  # fresh: each absorption rewires readers
        if node["op"] not in FUSABLE or node["name"] not in index.by_name:
            continue
        kernel = index.const(node["input"][1])
        if kernel is None or kernel.dtype != "float32":
            continue
        transpose_b = node["op"] == "MatMul" and node["attr"].get("transpose_b", {}).get("b", False)
        channels = kernel.shape[0] if transpose_b else (
            kernel.shape[2] * kernel.shape[3] if node["op"] == "DepthwiseConv2dNative" else kernel.shape[-1])
        scale: list = []  # steps of y = y * a + c, as (kind, reader of the const, binding)
        current, reshape, last = node, None, None
        reader = index.only_reader(node["name"])
        if reader is not None and reader["op"] == "Reshape" and node["op"] == "MatMul":
            reshape, current, reader = reader, reader, index.only_reader(reader["name"])
        split = _split_channels(index, reshape, channels)
        while reader is not None and reader["op"] in ("AddV2", "Sub", "Mul", "RealDiv"):
            mine = [i for i, ref in enumerate(reader["input"]) if node_name(ref) == current["name"]]
            other = reader["input"][1 - mine[0]] if len(mine) == 1 else None
            const = index.const(other) if other is not None else None
            vector = _channel_vector(const, channels, split) if const is not None else None
            if vector is None or (reader["op"] == "RealDiv" and mine[0] != 0):
                break
            kind = {"AddV2": "add", "Mul": "mul", "RealDiv": "div"}.get(reader["op"]) or ("sub" if mine[0] == 0 else "rsub")
            scale.append((kind, vector, const.binding))
            current, last = reader, reader
            reader = index.only_reader(reader["name"])
        if last is None:
            continue
        _absorb(graph, index, node, kernel, scale, channels, transpose_b, reshape, last)
    prune_unread(graph)


def _absorb(graph: GraphDef, index: GraphIndex, node: dict, kernel: Any, steps: list, channels: int, transpose_b: bool,
            reshape: dict | None, last: dict) -> None:
    def affine(*arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, c = np.ones(channels, "float32"), np.zeros(channels, "float32")
        for (kind, vector, _), array in zip(steps, arrays):
            k = vector(array)
            if kind == "add":
                c = c + k
            elif kind == "sub":
                c = c - k
            elif kind == "rsub":
                a, c = -a, k - c
            elif kind == "mul":
                a, c = a * k, c * k
            else:
                a, c = a / k, c / k
        return a.astype("float32"), c.astype("float32")

    inputs = tuple(binding for _, _, binding in steps)
    scaled = any(kind in ("mul", "div", "rsub") for kind, _, _ in steps)
    kernel_shape = tuple(kernel.shape)

    def new_kernel(w: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
        a = affine(*arrays)[0]
        w = np.asarray(w, "float32")
        if transpose_b:
            return w * a[:, None]
        return (w.reshape(*w.shape[:-2], -1) * a).reshape(w.shape) if node["op"] == "DepthwiseConv2dNative" else w * a

    if scaled:
        derived = WeightBinding("kernel", kernel_shape,
                                derived=Derived("fold_affine", (kernel.binding, *inputs), new_kernel))
        name = f"{kernel.name}/folded_{node['name']}"
        graph.consts[name] = dataclasses.replace(kernel, name=name, binding=derived)
        const_node = next(n for n in graph.nodes if n["name"] == kernel.name)
        graph.nodes.insert(graph.nodes.index(const_node) + 1, {**const_node, "name": name,
                                                              "attr": dict(const_node["attr"])})
        node["input"][1] = name
    bias_name = f"{node['name']}/bias"
    bias = WeightBinding("bias", (channels,), derived=Derived("fold_affine", inputs, lambda *arrays: affine(*arrays)[1]))
    first_const = next(n for n in graph.nodes if n["op"] == "Const")
    graph.consts[bias_name] = dataclasses.replace(kernel, name=bias_name, shape=(channels,), binding=bias)
    graph.nodes.insert(graph.nodes.index(first_const), {**first_const, "name": bias_name, "attr": {
        "dtype": {"type": "DT_FLOAT"}, "value": {"tensor": {"dtype": "DT_FLOAT", "tensorShape": attr_shape((channels,))["shape"]}}}})
    node["op"] = FUSABLE[node["op"]]
    node["input"].append(bias_name)
    node["attr"].update({"num_args": attr_i(1), "fused_ops": attr_strs(["BiasAdd"]), "epsilon": {"f": 0.0}})
    end = reshape if reshape is not None else node  # a reshape between stays, after the fused op
    chain = _chain(index, end, last)
    index.replace_reads(last["name"], end["name"])
    graph.rewrites.append({"rewrite": "fold_affine", "removed": " ".join(r["op"] for r in chain), "into": node["name"]})
    removed = {r["name"] for r in chain}
    graph.nodes = [n for n in graph.nodes if n["name"] not in removed]
    rename_outputs(graph, last["name"], end["name"])


def _chain(index: GraphIndex, start: dict, last: dict) -> list[dict]:
    out, current = [], start
    while current is not last:
        current = index.only_reader(current["name"])
        if current is None:
            break
        out.append(current)
    return out


def relu(graph: GraphDef) -> None:
    index = GraphIndex(graph)
    count = 0
    for node in graph.nodes:
        if node["op"] != "Maximum" or node["attr"].get("T", {}).get("type", "DT_FLOAT") != "DT_FLOAT":
            continue
        zeros = [i for i, ref in enumerate(node["input"]) if is_zero(index.const(ref))]
        if len(zeros) != 1:
            continue
        node["op"] = "Relu"
        node["input"] = [node["input"][1 - zeros[0]]]
        count += 1
    if count:
        graph.rewrites.append({"rewrite": "relu", "removed": f"{count} Maximum(x, 0)", "into": f"{count} Relu"})
    prune_unread(graph)


def fuse_activation(graph: GraphDef) -> None:
    index = GraphIndex(graph)
    dropped = set()
    for node in graph.nodes:
        if node["op"] not in FUSABLE.values() or len(node["attr"]["fused_ops"]["list"]["s"]) != 1:
            continue
        reader = index.only_reader(node["name"])
        if reader is None:
            continue
        activation = ACTIVATIONS.get(reader["op"])
        if reader["op"] == "Maximum":
            other = [ref for ref in reader["input"] if node_name(ref) != node["name"]]
            const = index.const(other[0]) if len(other) == 1 else None
            if const is not None and const.array is not None and const.array.size == 1 and float(const.array.reshape(-1)[0]) == 0.0:
                activation = "Relu"
        if activation is None:
            continue
        node["attr"]["fused_ops"] = attr_strs(["BiasAdd", activation])
        index.replace_reads(reader["name"], node["name"])
        rename_outputs(graph, reader["name"], node["name"])
        dropped.add(reader["name"])
        graph.rewrites.append({"rewrite": "fuse_activation", "removed": reader["op"], "into": node["name"]})
    graph.nodes = [n for n in graph.nodes if n["name"] not in dropped]


def cancel_scale(graph: GraphDef) -> None:
    index = GraphIndex(graph)
    dropped, count = set(), 0
    for node in graph.nodes:
        if node["op"] != "Mul" or node["name"] in dropped:
            continue
        scalars = [scalar_value(index.const(ref)) for ref in node["input"]]
        if len(scalars) != 2 or (scalars[0] is None) == (scalars[1] is None):
            continue
        factor, source = (scalars[0], node["input"][1]) if scalars[0] is not None else (scalars[1], node["input"][0])
        reader = index.only_reader(node["name"])
        if reader is None or reader["op"] != "RealDiv" or node_name(reader["input"][0]) != node["name"] \
                or scalar_value(index.const(reader["input"][1])) != factor or factor == 0.0:
            continue
        index.replace_reads(reader["name"], source)
        rename_outputs(graph, reader["name"], source)
        dropped |= {node["name"], reader["name"]}
        count += 1
    if count:
        graph.rewrites.append({"rewrite": "cancel_scale", "removed": f"{count} Mul RealDiv by the same scalar",
                               "into": "nothing"})
    graph.nodes = [n for n in graph.nodes if n["name"] not in dropped]
    prune_unread(graph)


def merge_duplicates(graph: GraphDef) -> None:
    seen: dict[str, str] = {}
    renamed: dict[str, str] = {}  # a dropped node -> the node it duplicates
    kept, count = [], 0
    keep_apart = {name for name, _, _ in graph.outputs} | {name for name, _, _ in graph.inputs}

    def rename(ref: str) -> str:
        name, _, port = ref.partition(":")
        return renamed.get(name, name) + (f":{port}" if port else "")

    for node in graph.nodes:
        node["input"] = [rename(ref) for ref in node["input"]]
        if node["op"] in ("Const", "Placeholder") or node["name"] in keep_apart:
            kept.append(node)
            continue
        key = json.dumps([node["op"], node["input"], node["attr"]], sort_keys=True)
        if key in seen:
            renamed[node["name"]] = seen[key]
            count += 1
            continue
        seen[key] = node["name"]
        kept.append(node)
    graph.nodes = kept
    if count:
        graph.rewrites.append({"rewrite": "merge_duplicates", "removed": f"{count} repeated nodes",
                               "into": "the first of each"})


def fold_transpose(graph: GraphDef) -> None:
    index = GraphIndex(graph)
    dropped, count = set(), 0
    for node in graph.nodes:
        if node["op"] != "Transpose":
            continue
        inner = index.by_name.get(node_name(node["input"][0]))
        if inner is None or inner["op"] != "Transpose" or ":" in node["input"][0] or index.only_reader(inner["name"]) is not node:
            continue
        outer_perm, inner_perm = index.const(node["input"][1]), index.const(inner["input"][1])
        if outer_perm is None or inner_perm is None or outer_perm.array is None or inner_perm.array is None:
            continue
        perm = inner_perm.array.reshape(-1)[outer_perm.array.reshape(-1)]  # out[i] = x[inner[outer[i]]]
        dropped.add(inner["name"])
        count += 1
        if (perm == np.arange(perm.size)).all():
            index.replace_reads(node["name"], inner["input"][0])
            rename_outputs(graph, node["name"], inner["input"][0])
            dropped.add(node["name"])
            continue
        perm_name = f"{node['name']}/perm"
        graph.consts[perm_name] = dataclasses.replace(
            outer_perm, name=perm_name, binding=WeightBinding(perm_name, outer_perm.shape, constant=perm.astype("int32")))
        const_node = index.by_name[outer_perm.name]
        graph.nodes.insert(graph.nodes.index(const_node), {**const_node, "name": perm_name, "attr": dict(const_node["attr"])})
        node["input"] = [inner["input"][0], perm_name]
    if count:
        graph.rewrites.append({"rewrite": "fold_transpose", "removed": f"{count} Transpose of a Transpose",
                               "into": "one Transpose each, or none where they cancel"})
    graph.nodes = [n for n in graph.nodes if n["name"] not in dropped]
    prune_unread(graph)


ORDER = (fold_reshape, layernorm_stats, softmax, relu, cancel_scale, merge_duplicates, fold_affine, fuse_activation,
         fold_scale, fold_norm_affine, gelu, softmax_transposed, fold_transpose, split_heads, merge_qkv, gather_rows, fold_reshape)


def rewrite_graph(graph: GraphDef) -> None:
    """Apply every rewrite in :data:`ORDER`, recording each in ``graph.rewrites``."""
    for rewrite in ORDER:
        rewrite(graph)
