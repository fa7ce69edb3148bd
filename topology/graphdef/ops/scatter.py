"""Scatters: ``x.at[idx].set(v)`` and ``x.at[idx].add(v)`` as TensorScatterUpdate and ScatterNd.

The form that converts is the one jnp's indexing writes: the indexed axes are the operand's leading
axes (``x.at[i]``, ``x.at[i, j]``, ``x.at[jnp.arange(b), lengths - 1]``), each indexed axis is
removed from the update (a point per index, whole trailing axes), and no batching axes. That is
exactly TF's ``TensorScatterUpdate(x, indices, updates)`` (set) and ``x + ScatterNd(indices,
updates, shape)`` (add).

Exact when: indices are unique for ``set`` (with duplicates XLA and TF.js may keep different ones),
and for ``add`` up to float32 summation order of duplicates. Out-of-bounds indices are dropped as
JAX's default ``FILL_OR_DROP`` mode drops them: the operand gets one padding slot per indexed axis,
out-of-bounds updates go there, and the slot is sliced off again (``CLIP`` clamps instead).
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from topology.graphdef.nodes import GraphBuilder, Value, attr_b, attr_type, is_static
from topology.graphdef.ops import GraphCase, handles
from topology.graphdef.ops.elementwise import g_unsupported
from topology.graphdef.ops.shape import strided_slice

I32 = {"T": attr_type("int32")}


@handles("scatter", "scatter-add", "scatter_add")
def scatter(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    x, indices, updates = values
    dn = eqn.params["dimension_numbers"]
    m = indices.shape[-1]
    leading = tuple(range(m))
    batch = len(indices.shape) - 1
    window = tuple(range(batch, batch + x.rank - m))
    if (tuple(dn.scatter_dims_to_operand_dims) != leading or tuple(dn.inserted_window_dims) != leading
            or tuple(dn.update_window_dims) != window or getattr(dn, "operand_batching_dims", ())
            or tuple(updates.shape[batch:]) != tuple(x.shape[m:])):
        raise g_unsupported(eqn, "this scatter form (only x.at[i, j, ...] over leading axes converts)")
    indices = g.cast(indices, "int32")
    mode = str(eqn.params.get("mode", "")).upper()
    if "CLIP" in mode:
        return _scatter(g, eqn, x, _clamp(g, indices, x.shape[:m]), updates)
    if "PROMISE" in mode:
        return _scatter(g, eqn, x, indices, updates)
    # FILL_OR_DROP: one extra slot at the end of each indexed axis takes the out-of-bounds updates.
    sizes = g.shape_vector(tuple(x.shape[:m]))
    inside = g.op("LogicalAnd", [g.op("GreaterEqual", [indices, g.ints([0] * m)], I32, indices.shape, bool),
                                 g.op("Less", [indices, sizes], I32, indices.shape, bool)], {}, indices.shape, bool)
    inside = g.op("All", [inside, g.scalar_int(-1)], {"keep_dims": attr_b(True), "Tidx": attr_type("int32")},
                  (*indices.shape[:-1], 1), bool)
    indices = g.op("SelectV2", [inside, indices, sizes], I32, indices.shape, "int32")
    padding = g.const(np.array([[0, 1]] * m + [[0, 0]] * (x.rank - m), "int32"))
    padded_shape = tuple(d + 1 if a < m else d for a, d in enumerate(x.shape))
    padded = g.op("PadV2", [x, padding, g.const(np.zeros((), x.dtype))], {"T": attr_type(x.dtype),
                  "Tpaddings": attr_type("int32")}, padded_shape, x.dtype)
    out = _scatter(g, eqn, padded, indices, updates)
    return strided_slice(g, out, [0] * x.rank, [-1 if a < m else None for a in range(x.rank)], [1] * x.rank,
                         tuple(x.shape))


def _scatter(g: GraphBuilder, eqn: Any, x: Value, indices: Value, updates: Value) -> Value:
    types = {"T": attr_type(x.dtype), "Tindices": attr_type("int32")}
    updates = g.cast(updates, x.dtype)
    if eqn.primitive.name == "scatter":
        return g.op("TensorScatterUpdate", [x, indices, updates], types, x.shape, x.dtype)
    shape = g.op("Shape", [x], {"out_type": attr_type("int32")}, (x.rank,), "int32")  # x may be padded: b + 1 rows
    added = g.op("ScatterNd", [indices, updates, shape], types, x.shape, x.dtype)
    return g.op("AddV2", [x, added], {"T": attr_type(x.dtype)}, x.shape, x.dtype)


def _clamp(g: GraphBuilder, indices: Value, sizes: tuple) -> Value:
    if not all(is_static(d) for d in sizes):
        return indices
    low = g.op("Maximum", [indices, g.ints([0] * len(sizes))], I32, indices.shape, "int32")
    return g.op("Minimum", [low, g.ints([d - 1 for d in sizes])], I32, indices.shape, "int32")


F, I = "float32", "int32"
CASES = [
    # wav2vec2's feature mask: a 1 at each example's last valid position; lengths 0 (index -1 -> the last
    # slot) and past the end (dropped) included by the int range.
    GraphCase("set_per_example", lambda x, n: x * jnp.zeros_like(x).at[jnp.arange(x.shape[0]), n[:, 0] - 1].set(1),
              [((5,), F), ((1,), I)], ("scatter", "iota"), int_range=(0, 8)),
    GraphCase("set_rows", lambda x, i: jnp.asarray(x).at[jnp.arange(x.shape[0]), i[:, 0]].set(x[:, 0] * 2),
              [((3, 4), F), ((1,), I)], ("scatter",), int_range=(0, 4)),
    GraphCase("add_duplicates", lambda x, i: jnp.asarray(x).at[jnp.arange(x.shape[0])[:, None], i].add(1.5),
              [((4,), F), ((3,), I)], ("scatter-add",), int_range=(0, 6)),
]
