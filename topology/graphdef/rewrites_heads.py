"""Attention heads split and merged on the feature axis, in fewer graph ops.

The per-head lowering (ops/linalg.py ``_per_head``) emits, for each operand of a per-head product,
``Reshape [b, L, H, d] -> Transpose -> Unpack`` over the heads axis, and for each result
``Pack -> Transpose [0, 2, 1, 3] -> Reshape``; TF.js spends more time per op in its graph
executor than in these kernels. Two rewrites, each exact (they move no value, only the ops that
index them):

- ``fold_scale``: a scalar ``*`` or ``/`` after a plain ``_FusedMatMul`` (through Reshapes: BERT's
  ``q / √d`` after q is split into heads) goes into its kernel and bias.
- ``split_heads``: ``Unpack(Transpose(Reshape(x, [b, L, H, d]), [0, 2, 1, 3]))`` is
  ``Split(Reshape(x, [b, L, H·d]), axis 2)`` (and with ``[0, 2, 3, 1]``, a Transpose ``[0, 2, 1]``
  before a Split on axis 1); ``Reshape(Transpose(Pack(heads), [0, 2, 1, 3]))`` is
  ``Reshape(ConcatV2(heads, axis 2))``; ``Unpack(Softmax(Pack(scores) + mask))`` is one
  ``Softmax(scores_h + mask)`` per head (the mask, broadcast over the heads axis, reshaped once
  without it). BERT-tiny: 9 ops fewer per layer.
- ``merge_qkv``: the q, k and v projections of one input, each split into heads that way, become one
  ``_FusedMatMul`` (kernels and biases concatenated when written), one Reshape and one Split into all
  3·H heads, the key heads each transposed: BERT-tiny 5 ops fewer per layer.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from topology.graph import Derived, WeightBinding
from topology.graphdef.graph_index import GraphIndex, producer, prune_unread, scalar_value, scaled_const
from topology.graphdef.nodes import Const, GraphDef, attr_i, attr_shape, attr_type, is_static
from topology.graphdef.prune import node_name
from topology.graphdef.rewrites_gelu import plain_fused_matmul



def fold_scale(graph: GraphDef) -> None:
    """Fold a scalar Mul/RealDiv after a plain ``_FusedMatMul`` (and an optional Reshape) into its weights.

    Example:
        >>> g = GraphDef()
        >>> fold_scale(g); g.rewrites  # nothing to rewrite in an empty graph
        []
    """
    count = 0
    for node in [n for n in graph.nodes if n["op"] == "_FusedMatMul"]:
        index = GraphIndex(graph)
        if not plain_fused_matmul(index, node):
            continue
        current = node
        reader = index.only_reader(node["name"])
        while reader is not None and reader["op"] == "Reshape" and node_name(reader["input"][0]) == current["name"]:
            current, reader = reader, index.only_reader(reader["name"])  # fold_affine can leave a Reshape pair
        if reader is None or reader["op"] not in ("Mul", "RealDiv"):
            continue
        mine = [i for i, ref in enumerate(reader["input"]) if node_name(ref) == current["name"]]
        value = scalar_value(index.const(reader["input"][1 - mine[0]])) if len(mine) == 1 else None
        if value is None or value == 0.0 or (reader["op"] == "RealDiv" and mine[0] != 0):
            continue
        factor = value if reader["op"] == "Mul" else 1.0 / value
        node["input"][1] = scaled_const(index, graph, node["input"][1], factor, f"scale_{node['name']}", "fold_scale")
        node["input"][2] = scaled_const(index, graph, node["input"][2], factor, f"scale_{node['name']}", "fold_scale")
        index.replace_reads(reader["name"], current["name"])
        graph.nodes = [n for n in graph.nodes if n["name"] != reader["name"]]
        count += 1
    if count:
        graph.rewrites.append({"rewrite": "fold_scale", "removed": f"{count}x a scalar * or / after a matmul",
                               "into": "its kernel and bias"})
    prune_unread(graph)


def _int_const(graph: GraphDef, name: str, values: list[int] | int) -> str:
    array = np.asarray(values, "int32")
    graph.consts[name] = Const(name, tuple(array.shape), "int32", WeightBinding(name, tuple(array.shape), constant=array))
    first = next(i for i, n in enumerate(graph.nodes) if n["op"] == "Const")
    graph.nodes.insert(first, {"name": name, "op": "Const", "input": [], "attr": {
        "dtype": attr_type("int32"), "value": {"tensor": {"dtype": "DT_INT32", "tensorShape": attr_shape(array.shape)["shape"]}}}})
    return name


def _perm(index: GraphIndex, node: dict) -> list[int] | None:
    const = index.const(node["input"][1])
    return None if const is None or const.array is None else [int(v) for v in const.array.reshape(-1)]


def _axis(node: dict) -> int:
    return int(node["attr"].get("axis", {}).get("i", 0))


def _split_inputs(graph: GraphDef) -> int:
    count = 0
    for unpack in [n for n in graph.nodes if n["op"] == "Unpack"]:
        index = GraphIndex(graph)
        transpose = producer(index, unpack["input"][0], "Transpose")
        reshape = producer(index, transpose["input"][0], "Reshape") if transpose is not None else None
        if reshape is None or _axis(unpack) != 1 or index.only_reader(transpose["name"]) is not unpack \
                or index.only_reader(reshape["name"]) is not transpose:
            continue
        target, perm = index.const(reshape["input"][1]), _perm(index, transpose)
        if target is None or target.array is None or target.array.size != 4 or perm not in ([0, 2, 1, 3], [0, 2, 3, 1]):
            continue
        b, length, heads, depth = (int(v) for v in target.array.reshape(-1))
        if heads != int(unpack["attr"]["num"]["i"]) or min(length, heads, depth) <= 0:
            continue
        name = unpack["name"]
        reshape["input"][1] = _int_const(graph, f"{name}/rows", [b, length, heads * depth])
        source = reshape["name"]
        if perm == [0, 2, 3, 1]:  # keys: [b, H·d, L], split on axis 1
            transpose["input"][1] = _int_const(graph, f"{name}/perm", [0, 2, 1])
            source, axis = transpose["name"], 1
        else:
            graph.nodes = [n for n in graph.nodes if n is not transpose]
            axis = 2
        unpack.update(op="Split", input=[_int_const(graph, f"{name}/axis", axis), source],
                      attr={"num_split": attr_i(heads), "T": unpack["attr"]["T"]})
        count += 1
    return count


def _concat_outputs(graph: GraphDef) -> int:
    count = 0
    for pack in [n for n in graph.nodes if n["op"] == "Pack"]:
        index = GraphIndex(graph)
        transpose = index.only_reader(pack["name"])
        reshape = index.only_reader(transpose["name"]) if transpose is not None and transpose["op"] == "Transpose" else None
        if reshape is None or reshape["op"] != "Reshape" or _axis(pack) != 1 or _perm(index, transpose) != [0, 2, 1, 3] \
                or node_name(reshape["input"][0]) != transpose["name"]:
            continue
        heads = [graph.shapes.get(node_name(ref)) for ref in pack["input"]]
        if any(shape is None or len(shape) != 3 for shape in heads):
            continue
        axis = _int_const(graph, f"{pack['name']}/axis", 2)
        pack.update(op="ConcatV2", input=[*pack["input"], axis],
                    attr={"N": attr_i(len(heads)), "T": pack["attr"]["T"], "Tidx": attr_type("int32")})
        reshape["input"][0] = pack["name"]
        graph.nodes = [n for n in graph.nodes if n is not transpose]
        count += 1
    return count


def _softmax_per_head(graph: GraphDef) -> int:
    count = 0
    masks: dict[str, str] = {}
    for pack in [n for n in graph.nodes if n["op"] == "Pack"]:
        index = GraphIndex(graph)
        add = index.only_reader(pack["name"])
        mask = None
        if add is not None and add["op"] == "AddV2":
            others = [ref for ref in add["input"] if node_name(ref) != pack["name"]]
            mask, softmax = (others[0] if len(others) == 1 else None), index.only_reader(add["name"])
        else:
            add, softmax = None, add
        unpack = index.only_reader(softmax["name"]) if softmax is not None and softmax["op"] == "Softmax" else None
        if unpack is None or unpack["op"] != "Unpack" or _axis(pack) != 1 or _axis(unpack) != 1 \
                or (add is not None and mask is None):
            continue
        mask_shape = graph.shapes.get(node_name(mask)) if mask is not None else None
        if mask is not None and (mask_shape is None or len(mask_shape) != 4 or mask_shape[1] != 1
                                 or not all(is_static(d) for d in mask_shape[2:])):
            continue
        if mask is not None and mask not in masks:
            first = mask_shape[0] if is_static(mask_shape[0]) else -1
            name = f"{node_name(mask)}/no_heads"
            target = _int_const(graph, f"{name}/shape", [first, *mask_shape[2:]])
            where = next(i for i, n in enumerate(graph.nodes) if n["name"] == node_name(mask))
            graph.nodes.insert(where + 1, {"name": name, "op": "Reshape", "input": [mask, target],
                                           "attr": {"T": attr_type("float32"), "Tshape": attr_type("int32")}})
            graph.shapes[name] = (mask_shape[0], *mask_shape[2:])
            masks[mask] = name
        new, renamed = [], {}
        for i, ref in enumerate(pack["input"]):
            head = ref
            if mask is not None:
                new.append({"name": f"{unpack['name']}/masked_{i}", "op": "AddV2", "input": [ref, masks[mask]],
                            "attr": {"T": attr_type("float32")}})
                head = new[-1]["name"]
            new.append({"name": f"{unpack['name']}/softmax_{i}", "op": "Softmax", "input": [head],
                        "attr": {"T": attr_type("float32")}})
            renamed[f"{unpack['name']}:{i}"] = new[-1]["name"]
            if i == 0:
                renamed[unpack["name"]] = new[-1]["name"]
        where = graph.nodes.index(pack)
        dropped = {pack["name"], softmax["name"], unpack["name"]} | ({add["name"]} if add is not None else set())
        graph.nodes[where:where + 1] = new
        graph.nodes = [n for n in graph.nodes if n["name"] not in dropped]
        for node in graph.nodes:
            node["input"] = [renamed.get(ref, ref) for ref in node["input"]]
        count += 1
    return count


def split_heads(graph: GraphDef) -> None:
    """Rewrite the per-head Reshape/Transpose/Unpack and Pack/Transpose/Reshape chains (in place).

    Example:
        >>> g = GraphDef()
        >>> split_heads(g); g.rewrites  # nothing to rewrite in an empty graph
        []
    """
    softmaxes = _softmax_per_head(graph)
    inputs, outputs = _split_inputs(graph), _concat_outputs(graph)
    if inputs or outputs or softmaxes:
        graph.rewrites.append({"rewrite": "split_heads", "removed": f"{inputs} Reshape Transpose Unpack, {outputs} Pack "
                               f"Transpose Reshape, {softmaxes} Pack Softmax Unpack",
                               "into": "Reshape Split, ConcatV2 Reshape, a Softmax per head"})
    prune_unread(graph)


def _head_split(index: GraphIndex, matmul: dict) -> tuple | None:
    """(Reshape, Transpose or None, Split) when ``matmul``'s output is split into heads by ``split_heads``."""
    reshape = index.only_reader(matmul["name"])
    if reshape is None or reshape["op"] != "Reshape":
        return None
    nxt = index.only_reader(reshape["name"])
    while nxt is not None and nxt["op"] == "Reshape":  # a pair fold_affine left (the last fold_reshape merges it)
        reshape, nxt = nxt, index.only_reader(nxt["name"])
    transpose = nxt if nxt is not None and nxt["op"] == "Transpose" else None
    split = index.only_reader(transpose["name"]) if transpose is not None else nxt
    if split is None or split["op"] != "Split":
        return None
    axis = index.const(split["input"][0])
    target = index.const(reshape["input"][1])
    if axis is None or target is None or target.array is None or target.array.size != 3:
        return None
    want = 1 if transpose is not None else 2
    if int(axis.array.reshape(-1)[0]) != want or (transpose is not None and _perm(index, transpose) != [0, 2, 1]):
        return None
    return reshape, transpose, split


def _chain_names(index: GraphIndex, start: dict, end: dict) -> list[str]:
    """The nodes from ``start``'s only reader to ``end``, along only readers."""
    out, current = [], start
    while current is not end:
        current = index.only_reader(current["name"])
        out.append(current["name"])
    return out


def _concat_columns(*arrays: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(a, "float32") for a in arrays], axis=-1).astype("float32")


def merge_qkv(graph: GraphDef) -> None:
    """Plain ``_FusedMatMul`` s of one input whose outputs are all split into heads become one matmul and one Split.

    Example:
        >>> g = GraphDef()
        >>> merge_qkv(g); g.rewrites  # nothing to rewrite in an empty graph
        []
    """
    count = 0
    for source in list(dict.fromkeys(n["input"][0] for n in graph.nodes if n["op"] == "_FusedMatMul")):
        index = GraphIndex(graph)
        users = [n for n in index.readers.get(node_name(source), []) if n["op"] == "_FusedMatMul" and n["input"][0] == source]
        parts = [(m, _head_split(index, m)) for m in users if plain_fused_matmul(index, m)]
        parts = [(m, p) for m, p in parts if p is not None]
        if len(parts) < 2:
            continue
        shapes = {(tuple(index.const(m["input"][1]).shape), int(p[2]["attr"]["num_split"]["i"]),
                   tuple(int(v) for v in index.const(p[0]["input"][1]).array.reshape(-1)[:2])) for m, p in parts}
        if len(shapes) != 1:
            continue
        (kernel_shape, heads, lead), = shapes
        first = parts[0][0]
        position = {n["name"]: i for i, n in enumerate(graph.nodes)}
        parts.sort(key=lambda mp: position[mp[0]["name"]])
        first = parts[0][0]  # the merged matmul and Split run where the first ones ran
        if any(position[r["name"]] < position[parts[0][1][2]["name"]] for _, (_, _, s) in parts for r in index.readers.get(s["name"], [])):
            continue  # a head is read before the first Split: keep them apart
        kernels = [index.const(m["input"][1]) for m, _ in parts]
        biases = [index.const(m["input"][2]) for m, _ in parts]
        width = kernel_shape[1] * len(parts)
        kernel_name, bias_name = f"{first['name']}/merged_kernel", f"{first['name']}/merged_bias"
        graph.consts[kernel_name] = dataclasses.replace(kernels[0], name=kernel_name, shape=(kernel_shape[0], width), binding=WeightBinding(
            "kernel", (kernel_shape[0], width), derived=Derived("merge_qkv", tuple(k.binding for k in kernels), _concat_columns)))
        graph.consts[bias_name] = dataclasses.replace(biases[0], name=bias_name, shape=(width,), binding=WeightBinding(
            "bias", (width,), derived=Derived("merge_qkv", tuple(b.binding for b in biases), _concat_columns)))
        for name, like, shape in ((kernel_name, kernels[0], (kernel_shape[0], width)), (bias_name, biases[0], (width,))):
            const_node = index.by_name[like.name]
            graph.nodes.insert(graph.nodes.index(const_node) + 1, {**const_node, "name": name, "attr": {
                "dtype": attr_type("float32"), "value": {"tensor": {"dtype": "DT_FLOAT", "tensorShape": attr_shape(shape)["shape"]}}}})
        first["input"][1:3] = [kernel_name, bias_name]
        reshape, _, split = next(p for m, p in parts if m is first)
        reshape["input"][1] = _int_const(graph, f"{first['name']}/merged_rows", [*lead, width])
        split["input"] = [_int_const(graph, f"{first['name']}/merged_axis", 2), reshape["name"]]
        split["attr"]["num_split"] = attr_i(heads * len(parts))
        renamed, added, dropped = {}, [], set()
        for j, (m, (r, t, s)) in enumerate(parts):
            if m is not first:
                dropped |= {m["name"], s["name"], *_chain_names(index, m, r)}
            if t is not None:
                dropped.add(t["name"])
            for i in range(heads):
                out = f"{split['name']}:{j * heads + i}"
                if t is not None:  # keys: each head transposed to [b, d, L]
                    added.append({"name": f"{s['name']}/head_{i}", "op": "Transpose", "input": [out, t["input"][1]],
                                  "attr": dict(t["attr"])})
                    out = added[-1]["name"]
                renamed[f"{s['name']}:{i}"] = out
                if i == 0:
                    renamed[s["name"]] = out
        graph.nodes = [n for n in graph.nodes if n["name"] not in dropped]
        where = graph.nodes.index(split) + 1
        graph.nodes[where:where] = added
        for node in graph.nodes:
            if node is not split and node not in added:
                node["input"] = [renamed.get(ref, ref) for ref in node["input"]]
        count += 1
    if count:
        graph.rewrites.append({"rewrite": "merge_qkv", "removed": f"{count}x q, k, v: 3 matmuls, 3 Reshapes, 3 Splits",
                               "into": "one matmul, one Reshape, one Split (a Transpose per key head)"})
    prune_unread(graph)
