"""Reductions, arg-extrema, pooling windows, cumulative sums, sorting and top-k."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from topology.graphdef.nodes import GraphBuilder, Value, attr_b, attr_i, attr_ints, attr_s, attr_type, is_static
from topology.graphdef.ops import GraphCase, handles
from topology.graphdef.ops.elementwise import g_unsupported
from topology.graphdef.ops.linalg import conv_padding, pad_explicitly

REDUCE = {"reduce_sum": "Sum", "reduce_max": "Max", "reduce_min": "Min", "reduce_prod": "Prod",
          "reduce_and": "All", "reduce_or": "Any"}


@handles(*REDUCE)
def reduce(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    x = values[0]
    axes = tuple(int(a) for a in eqn.params["axes"])
    if not axes:
        return x
    shape = tuple(eqn.outvars[0].aval.shape)
    return g.op(REDUCE[eqn.primitive.name], [x, g.ints(axes)], {"keep_dims": attr_b(False), "T": attr_type(x.dtype)},
                shape, x.dtype)


@handles("argmax", "argmin")
def argmax(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    x = values[0]
    (axis,) = eqn.params["axes"]
    op = "ArgMax" if eqn.primitive.name == "argmax" else "ArgMin"
    return g.op(op, [x, g.scalar_int(int(axis))], {"T": attr_type(x.dtype), "output_type": attr_type("int32")},
                tuple(eqn.outvars[0].aval.shape), "int32")


@handles("reduce_window_max", "reduce_window_sum")
def reduce_window(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    x = values[0]
    p = eqn.params
    windows, strides = list(p["window_dimensions"]), list(p["window_strides"])
    padding = [tuple(int(v) for v in pair) for pair in p["padding"]]
    if any(d != 1 for d in (*p.get("base_dilation", ()), *p.get("window_dilation", ()))):
        raise g_unsupported(eqn, "a dilated pooling window")
    pooled = [a for a in range(x.rank) if windows[a] != 1 or strides[a] != 1 or padding[a] != (0, 0)]
    out_shape = tuple(eqn.outvars[0].aval.shape)
    if x.rank == 3 and set(pooled) <= {1}:  # (N, W, C) pooled like (N, 1, W, C)
        x = g.reshape(x, (x.shape[0], 1, *x.shape[1:]))
        windows, strides, padding = [1, 1, *windows[1:]], [1, 1, *strides[1:]], [(0, 0), (0, 0), *padding[1:]]
    elif x.rank != 4 or not set(pooled) <= {1, 2}:
        raise g_unsupported(eqn, "a pooling window that is not over the middle axes of NHWC/NWC")
    is_max = eqn.primitive.name == "reduce_window_max"
    mode = conv_padding(x, [1, 2], windows[1:3], strides[1:3], [1, 1], padding[1:3])
    if mode != "VALID":  # TF's SAME pooling ignores the padding; XLA's counts it: pad explicitly
        x, mode = pad_explicitly(g, x, [1, 2], padding[1:3], -np.inf if is_max else 0.0), "VALID"
    pool_shape = out_shape if len(out_shape) == 4 else (out_shape[0], 1, *out_shape[1:])
    attrs = {"ksize": attr_ints(windows), "strides": attr_ints(strides), "padding": attr_s(mode),
             "data_format": attr_s("NHWC"), "T": attr_type("float32")}
    y = g.op("MaxPool" if is_max else "AvgPool", [x], attrs, pool_shape, "float32")
    if not is_max:  # a sum is the mean times the window size
        y = g.op("Mul", [y, g.const(np.float32(windows[1] * windows[2]))], {"T": attr_type("float32")},
                 pool_shape, "float32")
    return g.reshape(y, out_shape)


@handles("cumsum", "cumprod")
def cumulative(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    x = values[0]
    op = "Cumsum" if eqn.primitive.name == "cumsum" else "Cumprod"
    return g.op(op, [x, g.scalar_int(int(eqn.params["axis"]))],
                {"exclusive": attr_b(False), "reverse": attr_b(bool(eqn.params.get("reverse"))), "T": attr_type(x.dtype)},
                x.shape, x.dtype)


def _to_last(g: GraphBuilder, x: Value, axis: int) -> tuple[Value, list[int]]:
    perm = [a for a in range(x.rank) if a != axis] + [axis]
    return g.transpose(x, perm), perm


def _from_last(g: GraphBuilder, x: Value, perm: list[int]) -> Value:
    return g.transpose(x, [perm.index(a) for a in range(len(perm))])


@handles("sort")
def sort(g: GraphBuilder, eqn: Any, values: list[Value]) -> list[Value]:
    axis = int(eqn.params["dimension"])
    if int(eqn.params.get("num_keys", 1)) != 1:
        raise g_unsupported(eqn, "a sort on several keys")
    keys, perm = _to_last(g, values[0], axis)
    n = keys.shape[-1]
    # TopKV2 sorts descending and keeps equal keys in index order: the negated keys give a stable ascending sort.
    negated = g.op("Neg", [keys], {"T": attr_type(keys.dtype)}, keys.shape, keys.dtype)
    top, order = g.op("TopKV2", [negated, g.scalar_int(int(n))], {"sorted": attr_b(True)}, keys.shape, keys.dtype,
                      outputs=2)
    order.dtype = np.dtype("int32")
    outs = [g.op("Neg", [top], {"T": attr_type(keys.dtype)}, keys.shape, keys.dtype)]
    for other in values[1:]:
        moved, _ = _to_last(g, other, axis)
        outs.append(g.op("GatherV2", [moved, order, g.scalar_int(moved.rank - 1)],
                         {"batch_dims": attr_i(moved.rank - 1), "Tparams": attr_type(moved.dtype),
                          "Tindices": attr_type("int32")}, moved.shape, moved.dtype))
    return [_from_last(g, v, perm) for v in outs]


@handles("top_k")
def top_k(g: GraphBuilder, eqn: Any, values: list[Value]) -> list[Value]:
    x = values[0]
    axis = int(eqn.params.get("axis", x.rank - 1)) % x.rank
    moved, perm = _to_last(g, x, axis)
    k = int(eqn.params["k"])
    shape = (*moved.shape[:-1], k)
    top, order = g.op("TopKV2", [moved, g.scalar_int(k)], {"sorted": attr_b(True)}, shape, x.dtype, outputs=2)
    order.dtype = np.dtype("int32")
    return [_from_last(g, top, perm), _from_last(g, order, perm)]


F, I = "float32", "int32"
CASES = [
    GraphCase("sums_means", lambda x: x.sum(-1) + (x.mean((1, 2)) + x.max(1).min(-1) - jnp.prod(x[:, :2], (1, 2))
                                                    + (x > 0).all(-1).any(-1))[:, None], [((3, 4), F)], ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod",
                                                          "reduce_and", "reduce_or")),
    GraphCase("argmax_argmin", lambda x: jnp.argmax(x, -1) * 10 + jnp.argmin(x, 1).sum(-1, keepdims=True),
              [((4, 5), F)], ("argmax", "argmin")),
    GraphCase("pools_2d", lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
              .sum((1, 2)) + jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1),
                                                   ((0, 0), (1, 1), (1, 1), (0, 0))).mean((1, 2)),
              [((5, 5, 3), F)], ("reduce_window_max", "reduce_window_sum")),
    GraphCase("pool_1d", lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 1), (1, 2, 1), "VALID"),
              [((6, 2), F)], ("reduce_window_max",)),
    GraphCase("cumsum_cumprod", lambda x, i: jnp.cumsum(x, axis=-1) + jnp.cumprod(1 + x / 4, axis=1)
              + jax.lax.cumsum(x, axis=1, reverse=True) + jnp.cumsum(i, axis=-1), [((5,), F), ((5,), I)],
              ("cumsum", "cumprod")),
    GraphCase("sort_argsort", lambda x: jnp.sort(x, -1) + jnp.argsort(x, -1) + jnp.sort(x, 1)[:, ::-1] * 2,
              [((6,), F)], ("sort",)),
    GraphCase("sort_axis1", lambda x: jnp.sort(x, axis=1), [((5, 2), F)], ("sort",)),
    GraphCase("top_k", lambda x: jax.lax.top_k(x, 3)[0] * 100 + jax.lax.top_k(x, 3)[1], [((2, 7), F)], ("top_k",)),
]
