"""LayerNorm in fewer ops: the statistics (``layernorm_stats``) and the affine after them (``fold_norm_affine``).

JAX's LayerNorm (flax, ``use_fast_variance``) computes ``max(0, mean(x²) - mean(x)²)`` in 10 graph ops;
``Mean(Square(x - Mean(x)))`` with kept dims takes 4 and is equal up to float rounding. When the
normalized output only feeds matmuls (pre-LN transformers), ``* gamma + beta`` goes into their weights.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from topology.graph import Derived, WeightBinding
from topology.graphdef.graph_index import GraphIndex, is_zero, producer, prune_unread, scalar_value
from topology.graphdef.nodes import GraphDef
from topology.graphdef.prune import node_name, prune


def _mean_of(index: GraphIndex, graph: GraphDef, ref: str) -> tuple[str, str] | None:
    """(x, axes) when ``ref`` is ``Sum(x, axes) / n`` with n the number of elements summed."""
    div = producer(index, ref, "RealDiv")
    total = producer(index, div["input"][0], "Sum") if div is not None else None
    if total is None or total["attr"].get("keep_dims", {}).get("b", False):
        return None
    n, axes = scalar_value(index.const(div["input"][1])), index.const(total["input"][1])
    shape = graph.shapes.get(node_name(total["input"][0]))
    if n is None or axes is None or axes.array is None or shape is None:
        return None
    dims = [shape[int(a)] for a in axes.array.reshape(-1)]
    if not all(isinstance(d, int) for d in dims) or float(np.prod(dims)) != n:
        return None
    return total["input"][0], total["input"][1]


def _layernorm(index: GraphIndex, graph: GraphDef, rsqrt: dict) -> tuple | None:
    shift = producer(index, rsqrt["input"][0], "AddV2")
    if shift is None:
        return None
    slots = [i for i, ref in enumerate(shift["input"]) if scalar_value(index.const(ref)) is None]
    if len(slots) != 1:
        return None
    kept = producer(index, shift["input"][slots[0]], "Reshape")
    clamp = producer(index, kept["input"][0], ("Relu", "Maximum")) if kept is not None else None
    if clamp is not None and clamp["op"] == "Maximum":  # max(0, v): JAX's spelling, before the relu rewrite
        others = [ref for ref in clamp["input"] if not is_zero(index.const(ref))]
        clamp = {"input": others} if len(others) == 1 else None
    diff = producer(index, clamp["input"][0], "Sub") if clamp is not None else None
    square = producer(index, diff["input"][1], "Square") if diff is not None else None
    if square is None:
        return None
    mean, mean_sq = _mean_of(index, graph, square["input"][0]), _mean_of(index, graph, diff["input"][0])
    x_sq = producer(index, mean_sq[0], "Square") if mean_sq is not None else None
    if mean is None or x_sq is None or x_sq["input"][0] != mean[0] or index.const(mean_sq[1]) is None \
            or not np.array_equal(index.const(mean_sq[1]).array, index.const(mean[1]).array):
        return None
    centers = [c for r in index.readers.get(node_name(square["input"][0]), []) if r["op"] == "Reshape"
               and graph.shapes.get(r["name"]) == graph.shapes.get(kept["name"])
               for c in index.readers.get(r["name"], []) if c["op"] == "Sub" and c["input"] == [mean[0], r["name"]]]
    x_shape, axes = graph.shapes.get(node_name(mean[0])), index.const(mean[1]).array.reshape(-1)
    reduced = {int(a) % len(x_shape) for a in axes} if x_shape else set()
    kept_shape = tuple(1 if i in reduced else d for i, d in enumerate(x_shape or ()))
    if not centers or graph.shapes.get(kept["name"]) != kept_shape or graph.nodes.index(centers[0]) > graph.nodes.index(shift):
        return None  # the reshaped statistics must be exactly what Mean with kept dims gives
    return mean[0], mean[1], centers[0], shift, slots[0]


def layernorm_stats(graph: GraphDef) -> None:
    count = 0
    for rsqrt in [n for n in graph.nodes if n["op"] == "Rsqrt"]:
        match = _layernorm(GraphIndex(graph), graph, rsqrt)
        if match is None:
            continue
        x, axes, center, shift, slot = match
        keep = {"keep_dims": {"b": True}, "T": {"type": "DT_FLOAT"}, "Tidx": {"type": "DT_INT32"}}
        mean, square, var = (f"{center['name']}/{part}" for part in ("mean", "square", "variance"))
        graph.nodes.insert(graph.nodes.index(center), {"name": mean, "op": "Mean", "input": [x, axes], "attr": dict(keep)})
        center["input"][1] = mean
        at = graph.nodes.index(shift)
        graph.nodes[at:at] = [{"name": square, "op": "Square", "input": [center["name"]], "attr": {"T": {"type": "DT_FLOAT"}}},
                              {"name": var, "op": "Mean", "input": [square, axes], "attr": dict(keep)}]
        shift["input"][slot] = var
        count += 1
    if count:
        graph.rewrites.append({"rewrite": "layernorm_stats", "removed": f"{count}x mean(x²) - mean(x)² in 10 ops",
                               "into": f"{count}x Mean(Square(x - Mean(x))) in 4 ops"})
        prune(graph)  # the old statistics nobody reads any more



def _norm_affine(index: GraphIndex, add: dict) -> tuple | None:
    """(centered·rsqrt node, its Mul by gamma, gamma, beta, the matmuls) for ``centered * (rsqrt * gamma) + beta``."""
    betas = [index.const(ref) for ref in add["input"]]
    if add["op"] != "AddV2" or len([b for b in betas if b is not None]) != 1:
        return None
    beta = next(b for b in betas if b is not None)
    scaled = producer(index, next(ref for ref, b in zip(add["input"], betas) if b is None), "Mul")
    if scaled is None or index.only_reader(scaled["name"]) is not add:
        return None
    factors = [producer(index, ref, "Mul") for ref in scaled["input"]]
    for scale in factors:
        gammas = [index.const(ref) for ref in scale["input"]] if scale is not None else []
        if scale is None or len([g for g in gammas if g is not None]) != 1 or index.only_reader(scale["name"]) is not scaled:
            continue
        if producer(index, next(ref for ref, g in zip(scale["input"], gammas) if g is None), "Rsqrt") is None:
            continue
        gamma = next(g for g in gammas if g is not None)
        channels = int(np.prod(gamma.shape))
        if gamma.shape[-1] != channels or beta.shape[-1] != channels or int(np.prod(beta.shape)) != channels:
            return None
        flats = index.readers.get(add["name"], [])
        if add["name"] in index.outputs or not flats or any(f["op"] != "Reshape" or f["name"] in index.outputs for f in flats):
            return None
        users = [u for f in flats for u in index.readers.get(f["name"], [])]
        for user in users:
            kernel = index.const(user["input"][1]) if user["op"] == "_FusedMatMul" else None
            if kernel is None or kernel.dtype != "float32" or user["input"][0] not in {f["name"] for f in flats} \
                    or user["attr"].get("transpose_a", {}).get("b") \
                    or user["attr"].get("transpose_b", {}).get("b") or kernel.shape[0] != channels \
                    or user["attr"]["fused_ops"]["list"]["s"][0] not in ("BiasAdd", "Qmlhc0FkZA==") or len(user["input"]) != 3:
                return None
        return scaled, scale, gamma, beta, users
    return None


def _scale_rows(w: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    return (np.asarray(w, "float32") * np.asarray(gamma, "float32").reshape(-1, 1)).astype("float32")


def _shift_bias(bias: np.ndarray, beta: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (np.asarray(bias, "float64") + np.asarray(beta, "float64").reshape(-1) @ np.asarray(w, "float64")).astype("float32")


def fold_norm_affine(graph: GraphDef) -> None:
    count = 0
    for add in [n for n in graph.nodes if n["op"] == "AddV2"]:
        index = GraphIndex(graph)
        match = _norm_affine(index, add)
        if match is None:
            continue
        scaled, scale, gamma, beta, users = match
        for user in users:
            kernel, bias = index.const(user["input"][1]), index.const(user["input"][2])
            kernel_name, bias_name = f"{kernel.name}/norm_{user['name']}", f"{bias.name}/norm"
            scaled_rows = Derived("fold_norm_affine", (kernel.binding, gamma.binding), _scale_rows)
            shifted = Derived("fold_norm_affine", (bias.binding, beta.binding, kernel.binding), _shift_bias)
            graph.consts[kernel_name] = dataclasses.replace(
                kernel, name=kernel_name, binding=WeightBinding("kernel", kernel.shape, derived=scaled_rows))
            graph.consts[bias_name] = dataclasses.replace(
                bias, name=bias_name, binding=WeightBinding("bias", bias.shape, derived=shifted))
            for name, old in ((kernel_name, kernel.name), (bias_name, bias.name)):
                const_node = index.by_name[old]
                graph.nodes.insert(graph.nodes.index(const_node) + 1, {**const_node, "name": name, "attr": dict(const_node["attr"])})
            user["input"][1:3] = [kernel_name, bias_name]
        rsqrt_ref = next(ref for ref in scale["input"] if index.const(ref) is None)
        scaled["input"] = [rsqrt_ref if ref == scale["name"] else ref for ref in scaled["input"]]
        index.replace_reads(add["name"], scaled["name"])
        graph.nodes = [n for n in graph.nodes if n["name"] not in (scale["name"], add["name"])]
        count += 1
    if count:
        graph.rewrites.append({"rewrite": "fold_norm_affine", "removed": f"{count}x LayerNorm * gamma + beta",
                               "into": "the kernels and biases of the matmuls reading them"})
    prune_unread(graph)
