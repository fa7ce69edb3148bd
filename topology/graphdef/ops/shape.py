"""Layout and indexing: broadcast, reshape, transpose, slices, pads, concatenation, gathers.

Shapes may hold the symbolic batch ``b``: reshapes spell it ``-1``; static slices keep a
batch-long axis whole with TF's begin/end masks.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from topology.graphdef.nodes import GraphBuilder, Value, attr_i, attr_type, is_static
from topology.graphdef.ops import GraphCase, handles
from topology.graphdef.ops.elementwise import g_unsupported


@handles("broadcast_in_dim")
def broadcast_in_dim(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    x = values[0]
    dims = tuple(eqn.params["broadcast_dimensions"])
    shape = tuple(eqn.params["shape"])
    expanded = tuple(x.shape[dims.index(i)] if i in dims else 1 for i in range(len(shape)))
    # The reshape alone: element-wise consumers broadcast, the others get the full shape from the walker.
    return g.reshape(x, expanded)


broadcast_in_dim.broadcasts = True  # type: ignore[attr-defined]


@handles("reshape")
def reshape(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    if eqn.params.get("dimensions") is not None:
        raise g_unsupported(eqn, "a reshape with a dimension order")
    return g.reshape(values[0], tuple(eqn.outvars[0].aval.shape))


@handles("squeeze")
def squeeze(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    return g.reshape(values[0], tuple(eqn.outvars[0].aval.shape))


@handles("transpose")
def transpose(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    return g.transpose(values[0], eqn.params["permutation"])


@handles("rev")
def rev(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    x = values[0]
    return g.op("ReverseV2", [x, g.ints(eqn.params["dimensions"])], {"T": attr_type(x.dtype)}, x.shape, x.dtype)


@handles("concatenate")
def concatenate(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    axis = int(eqn.params["dimension"])
    shape = tuple(eqn.outvars[0].aval.shape)
    return g.op("ConcatV2", [*values, g.scalar_int(axis)], {"N": attr_i(len(values)), "T": attr_type(values[0].dtype)},
                shape, values[0].dtype)


@handles("stack")
def stack(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    # jnp.stack is a primitive of its own since JAX 0.10 (rotary embeddings interleave sin/cos with it).
    axis = int(eqn.params["axis"])
    shape = tuple(eqn.outvars[0].aval.shape)
    return g.op("Pack", values, {"N": attr_i(len(values)), "axis": attr_i(axis), "T": attr_type(values[0].dtype)},
                shape, values[0].dtype)


@handles("tile")
def tile(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    # jnp.tile is a primitive of its own since JAX 0.10 (CLIP tiles its class embedding over the batch).
    x, reps = values[0], tuple(eqn.params["reps"])
    multiples = g.ints(reps) if all(is_static(r) for r in reps) else g.shape_vector(reps)  # CLIP: (b, 1, 1)
    return g.op("Tile", [x, multiples], {"T": attr_type(x.dtype), "Tmultiples": attr_type("int32")},
                tuple(eqn.outvars[0].aval.shape), x.dtype)


@handles("pad")
def pad(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    x, fill = values
    config = [tuple(int(v) for v in c) for c in eqn.params["padding_config"]]
    if any(interior for _, _, interior in config):
        raise g_unsupported(eqn, "interior padding")
    padded_shape = tuple(d + max(lo, 0) + max(hi, 0) for d, (lo, hi, _) in zip(x.shape, config))
    paddings = g.const(np.asarray([[max(lo, 0), max(hi, 0)] for lo, hi, _ in config], "int32").reshape(-1, 2))
    out = x
    if any(lo > 0 or hi > 0 for lo, hi, _ in config):
        out = g.op("PadV2", [x, paddings, g.reshape(fill, ())], {"T": attr_type(x.dtype)}, padded_shape, x.dtype)
    if any(lo < 0 or hi < 0 for lo, hi, _ in config):  # negative padding crops
        out = strided_slice(g, out, [-min(lo, 0) for lo, _, _ in config],
                            [d + min(hi, 0) if is_static(d) else None for d, (_, hi, _) in zip(out.shape, config)],
                            [1] * out.rank, tuple(eqn.outvars[0].aval.shape))
    return out


def strided_slice(g: GraphBuilder, x: Value, begin: list, end: list, strides: list, shape: tuple) -> Value:
    """``x[begin:end:strides]`` per axis; an ``end`` of None takes the axis to its end."""
    end_mask = sum(1 << i for i, e in enumerate(end) if e is None)
    begin_mask = sum(1 << i for i, (b, e) in enumerate(zip(begin, end)) if e is None and b == 0)
    return g.op("StridedSlice", [x, g.ints(begin), g.ints([0 if e is None else e for e in end]), g.ints(strides)],
                {"begin_mask": attr_i(begin_mask), "end_mask": attr_i(end_mask), "ellipsis_mask": attr_i(0),
                 "new_axis_mask": attr_i(0), "shrink_axis_mask": attr_i(0), "T": attr_type(x.dtype)}, shape, x.dtype)


@handles("slice")
def slice_(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    x = values[0]
    start = [int(s) for s in eqn.params["start_indices"]]
    limit = [int(l) if is_static(l) else None for l in eqn.params["limit_indices"]]
    strides = [int(s) for s in (eqn.params.get("strides") or [1] * x.rank)]
    end = [None if l is None or (is_static(d) and l == d) else l for l, d in zip(limit, x.shape)]
    return strided_slice(g, x, start, end, strides, tuple(eqn.outvars[0].aval.shape))


@handles("dynamic_slice")
def dynamic_slice(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    x, *starts = values
    sizes = tuple(eqn.params["slice_sizes"])
    shape = tuple(eqn.outvars[0].aval.shape)
    if all(s.known for s in starts):  # XLA clamps the start so the slice stays inside
        begin = [0 if not is_static(d) else int(np.clip(int(s.value), 0, d - n)) for s, d, n in zip(starts, x.shape, sizes)]
        end = [None if not is_static(n) or b + n == d else b + n for b, n, d in zip(begin, sizes, x.shape)]
        return strided_slice(g, x, begin, end, [1] * x.rank, shape)
    clamped = []
    for s, d, n in zip(starts, x.shape, sizes):
        if not is_static(d) or s.known:
            clamped.append(g.reshape(g.const(np.int32(0 if not is_static(d) else np.clip(int(s.value), 0, d - n))), (1,)))
            continue
        s = g.cast(g.reshape(s, (1,)), "int32")
        low = g.op("Maximum", [s, g.ints([0])], {"T": attr_type("int32")}, (1,), "int32")
        clamped.append(g.op("Minimum", [low, g.ints([d - n])], {"T": attr_type("int32")}, (1,), "int32"))
    begin = g.op("ConcatV2", [*clamped, g.scalar_int(0)], {"N": attr_i(len(clamped)), "T": attr_type("int32")},
                 (x.rank,), "int32")
    size = g.ints([int(n) if is_static(n) else -1 for n in sizes])
    return g.op("Slice", [x, begin, size], {"T": attr_type(x.dtype)}, shape, x.dtype)


@handles("iota")
def iota(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    # A static iota is folded to a constant before this; here the shape holds the batch.
    shape, axis = tuple(eqn.params["shape"]), int(eqn.params["dimension"])
    if not is_static(shape[axis]):  # 0 .. k*b - 1 along a batch-sized axis (e.g. a per-example gather's row)
        limit = g.reshape(g.shape_vector((shape[axis],)), ())
        line = g.op("Range", [g.scalar_int(0), limit, g.scalar_int(1)], {"Tidx": attr_type("int32")},
                    (shape[axis],), "int32")
        line = g.reshape(line, tuple(shape[axis] if a == axis else 1 for a in range(len(shape))))
        return g.cast(line, eqn.params["dtype"])
    line = np.arange(shape[axis], dtype="int32").reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return Value(None, line.shape, line.dtype, line)  # broadcast by its consumers (or the walker)


iota.broadcasts = True  # type: ignore[attr-defined]


@handles("dim_as_value")
def dim_as_value(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    return g.reshape(g.shape_vector((eqn.params["dim"],)), ())


def index_axis0(g: GraphBuilder, x: Value, i: int) -> Value:
    """``x[i]`` for a static ``i`` (one step of an unrolled scan)."""
    if x.known:
        return Value(None, x.shape[1:], x.dtype, x.value[i])
    sliced = strided_slice(g, x, [i] + [0] * (x.rank - 1), [i + 1] + [None] * (x.rank - 1), [1] * x.rank,
                           (1, *x.shape[1:]))
    return g.reshape(sliced, x.shape[1:])


def stack_axis0(g: GraphBuilder, items: list[Value], shape: tuple) -> Value:
    """The values stacked on a new first axis (the ys of an unrolled scan)."""
    if all(v.known for v in items):
        return Value(None, shape, items[0].dtype, np.stack([v.value for v in items]))
    items = [g.full(v, shape[1:]) for v in items]
    return g.op("Pack", items, {"N": attr_i(len(items)), "axis": attr_i(0), "T": attr_type(items[0].dtype)},
                shape, items[0].dtype)


@handles("split")
def split(g: GraphBuilder, eqn: Any, values: list[Value]) -> list[Value]:
    x = values[0]
    axis = int(eqn.params["axis"])
    outs, offset = [], 0
    for var, size in zip(eqn.outvars, eqn.params["sizes"]):
        begin = [0] * x.rank
        end: list = [None] * x.rank
        begin[axis], end[axis] = offset, offset + int(size)
        outs.append(strided_slice(g, x, begin, end, [1] * x.rank, tuple(var.aval.shape)))
        offset += int(size)
    return outs


def _permute_labels(source: list, target: list) -> list[int]:
    return [source.index(label) for label in target]


@handles("gather")
def gather(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    x, indices = values
    dn = eqn.params["dimension_numbers"]
    sizes = tuple(eqn.params["slice_sizes"])
    out_shape = tuple(eqn.outvars[0].aval.shape)
    offset_dims, collapsed, index_map = tuple(dn.offset_dims), tuple(dn.collapsed_slice_dims), tuple(dn.start_index_map)
    operand_batching = tuple(getattr(dn, "operand_batching_dims", ()))
    indices_batching = tuple(getattr(dn, "start_indices_batching_dims", ()))
    batch_shape = indices.shape[:-1]
    if indices.known and not operand_batching and int(np.prod(batch_shape, dtype=np.int64)) == 1:
        starts = indices.value.reshape(-1)
        begin = [0] * x.rank
        for k, axis in enumerate(index_map):
            begin[axis] = int(np.clip(int(starts[k]), 0, x.shape[axis] - sizes[axis]))
        end = [None if not is_static(n) or b + n == d else b + n for b, n, d in zip(begin, sizes, x.shape)]
        sliced = strided_slice(g, x, begin, end, [1] * x.rank, sizes)
        return g.reshape(sliced, out_shape)
    if indices.known and not operand_batching:
        return _gather_known(g, x, indices.value, index_map, collapsed, sizes, offset_dims, out_shape)
    whole = all(n == d for a, (n, d) in enumerate(zip(sizes, x.shape)) if a not in collapsed and a not in operand_batching)
    if not whole or set(collapsed) != set(index_map):
        raise g_unsupported(eqn, "this gather form (only take, take_along_axis and row lookups convert)")
    offsets = [a for a in range(x.rank) if a not in collapsed and a not in operand_batching]
    xla_labels, batch_iter, offset_iter = [], iter(range(len(batch_shape))), iter(offsets)
    for position in range(len(out_shape)):
        xla_labels.append(("o", next(offset_iter)) if position in offset_dims else ("b", next(batch_iter)))
    mode = str(eqn.params.get("mode", ""))
    if len(index_map) == 1:
        k = len(operand_batching)
        if operand_batching != tuple(range(k)) or indices_batching != tuple(range(k)):
            # take_along_axis along a middle axis batches over the axes around it: move the paired
            # batching axes to the front of operand and indices (pairs keep their order), relabel.
            x_perm = list(operand_batching) + [a for a in range(x.rank) if a not in operand_batching]
            i_perm = list(indices_batching) + [i for i in range(indices.rank) if i not in indices_batching]
            x, indices = g.transpose(x, x_perm), g.transpose(indices, i_perm)
            batch_shape = indices.shape[:-1]
            xla_labels = [("o", x_perm.index(a)) if kind == "o" else ("b", i_perm.index(a)) for kind, a in xla_labels]
            index_map = (x_perm.index(index_map[0]),)
            operand_batching = indices_batching = tuple(range(k))
        axis = index_map[0]
        if axis < k:
            raise g_unsupported(eqn, "a gather that indexes one of its own batching axes")
        flat = g.reshape(indices, batch_shape)
        flat = _clip_indices(g, flat, x.shape[axis], mode)
        if k:
            return _gather_batched(g, x, flat, axis, k, xla_labels)
        tf_labels = ([("b", i) for i in range(k)] + [("o", a) for a in range(k, axis)]
                     + [("b", i) for i in range(k, len(batch_shape))] + [("o", a) for a in range(axis + 1, x.rank)])
        tf_shape = tuple(x.shape[:axis]) + tuple(batch_shape[k:]) + tuple(x.shape[axis + 1:])
        out = g.op("GatherV2", [x, flat, g.scalar_int(axis)], {"batch_dims": attr_i(k), "Tparams": attr_type(x.dtype),
                                                                 "Tindices": attr_type("int32")}, tf_shape, x.dtype)
        return g.transpose(out, _permute_labels(tf_labels, xla_labels))
    if not operand_batching and tuple(index_map) == tuple(range(len(index_map))):
        m = len(index_map)
        tf_labels = [("b", i) for i in range(len(batch_shape))] + [("o", a) for a in range(m, x.rank)]
        out = g.op("GatherNd", [x, indices], {"Tparams": attr_type(x.dtype), "Tindices": attr_type("int32")},
                   tuple(batch_shape) + tuple(x.shape[m:]), x.dtype)
        return g.transpose(out, _permute_labels(tf_labels, xla_labels))
    raise g_unsupported(eqn, "this gather form (only take, take_along_axis and row lookups convert)")


def _gather_batched(g: GraphBuilder, x: Value, flat: Value, axis: int, k: int, xla_labels: list) -> Value:
    # take_along_axis with its k batching axes leading. Not GatherV2's batch_dims: TF.js 4.22's wasm
    # backend traps on it. Instead the batching axes and the indexed axis become one flat row axis,
    # each index is offset by its batch row's start (Range * axis size), one plain GatherV2 on axis 0.
    rest = [a for a in range(k, x.rank) if a != axis]
    rows = math.prod(x.shape[:k])
    length = x.shape[axis]
    moved = g.transpose(x, [*range(k), axis, *rest])
    table = g.reshape(moved, (rows * length, *(x.shape[a] for a in rest)))
    if is_static(rows):
        starts = Value(None, (rows,), np.dtype("int32"), np.arange(rows, dtype="int32") * int(length))
    else:
        limit = g.reshape(g.shape_vector((rows,)), ())
        line = g.op("Range", [g.scalar_int(0), limit, g.scalar_int(1)], {"Tidx": attr_type("int32")}, (rows,), "int32")
        starts = g.op("Mul", [line, g.scalar_int(int(length))], {"T": attr_type("int32")}, (rows,), "int32")
    starts = g.reshape(starts, (*flat.shape[:k], *(1,) * (flat.rank - k)))
    flat = g.op("AddV2", [flat, starts], {"T": attr_type("int32")}, flat.shape, "int32")
    tf_shape = (*flat.shape, *(x.shape[a] for a in rest))
    out = g.op("GatherV2", [table, flat, g.scalar_int(0)], {"batch_dims": attr_i(0), "Tparams": attr_type(x.dtype),
                                                            "Tindices": attr_type("int32")}, tf_shape, x.dtype)
    tf_labels = [("b", i) for i in range(flat.rank)] + [("o", a) for a in rest]
    return g.transpose(out, _permute_labels(tf_labels, xla_labels))


def _gather_known(g: GraphBuilder, x: Value, indices: np.ndarray, index_map: tuple, collapsed: tuple, sizes: tuple,
                  offset_dims: tuple, out_shape: tuple) -> Value:
    # Indices known at conversion time (strided or fancy static indexing): spell out every indexed
    # position, then one GatherNd over the indexed axes moved to the front.
    free = [a for a in range(x.rank) if a not in index_map]
    if any(is_static(sizes[a]) and is_static(x.shape[a]) and sizes[a] != x.shape[a] for a in free):
        end = [None if a not in free or not is_static(sizes[a]) or sizes[a] == x.shape[a] else sizes[a]
               for a in range(x.rank)]
        x = strided_slice(g, x, [0] * x.rank, end, [1] * x.rank,
                          tuple(sizes[a] if a in free else x.shape[a] for a in range(x.rank)))
    batch_shape = indices.shape[:-1]
    windows = [a for a in index_map if a not in collapsed]
    grids = np.meshgrid(*[np.arange(sizes[a]) for a in windows], indexing="ij") if windows else []
    window_shape = tuple(sizes[a] for a in windows)
    full = np.zeros((*batch_shape, *window_shape, len(index_map)), "int32")
    for j, axis in enumerate(index_map):
        start = np.clip(indices[..., j].astype(np.int64), 0, x.shape[axis] - sizes[axis])
        start = start.reshape(*batch_shape, *(1,) * len(window_shape))
        offset = grids[windows.index(axis)] if axis in windows else 0
        full[..., j] = start + offset
    moved = g.transpose(x, [*index_map, *free])
    out = g.op("GatherNd", [moved, g.const(full)], {"Tparams": attr_type(x.dtype), "Tindices": attr_type("int32")},
               (*batch_shape, *window_shape, *(x.shape[a] for a in free)), x.dtype)
    tf_labels = ([("b", i) for i in range(len(batch_shape))] + [("o", a) for a in windows] + [("o", a) for a in free])
    offsets = sorted(a for a in range(x.rank) if a not in collapsed)
    xla_labels, batch_iter, offset_iter = [], iter(range(len(batch_shape))), iter(offsets)
    for position in range(len(out_shape)):
        xla_labels.append(("o", next(offset_iter)) if position in offset_dims else ("b", next(batch_iter)))
    return g.transpose(out, _permute_labels(tf_labels, xla_labels))


def _clip_indices(g: GraphBuilder, idx: Value, size: Any, mode: str) -> Value:
    if "CLIP" not in mode.upper() or not is_static(size):
        return idx
    low = g.op("Maximum", [idx, g.scalar_int(0)], {"T": attr_type("int32")}, idx.shape, "int32")
    return g.op("Minimum", [low, g.scalar_int(int(size) - 1)], {"T": attr_type("int32")}, idx.shape, "int32")


F, I = "float32", "int32"
_TABLE = np.linspace(-1, 1, 40, dtype="float32").reshape(10, 4)
CASES = [
    GraphCase("reshape_transpose", lambda x: jnp.transpose(x.reshape(x.shape[0], 3, 2, 2), (0, 2, 1, 3)).reshape(
        x.shape[0], -1)[:, None, :], [((12,), F)], ("reshape", "transpose", "broadcast_in_dim")),
    GraphCase("squeeze_expand", lambda x: jnp.expand_dims(jnp.squeeze(x, 2), 1) * 2, [((3, 1, 4), F)],
              ("squeeze", "broadcast_in_dim")),
    GraphCase("concat_pad_rev", lambda x, y: jnp.pad(jnp.concatenate([x, y, x], axis=-1), ((0, 0), (1, 2), (2, 0)),
                                                     constant_values=0.5)[:, ::-1], [((2, 3), F), ((2, 1), F)],
              ("concatenate", "pad", "rev")),
    GraphCase("stack_interleave", lambda x: jnp.stack([-x[..., 1::2], x[..., ::2]], axis=-1).reshape(x.shape)
              + jnp.stack([x, x * 2], axis=1)[:, 1], [((3, 4), F)], ("stack", "slice", "reshape")),
    GraphCase("tile", lambda x: jnp.tile(x, (1, 2, 3)) * jnp.tile(x[:, :1, :1], (1, 4, 6)), [((2, 2), F)], ("tile",)),
    GraphCase("tile_over_batch", lambda x: x * jnp.tile(x[:1], (x.shape[0], 1, 1))
              + jnp.tile(jnp.full((1, 2, 2), 0.5, jnp.float32), (x.shape[0], 1, 1)), [((2, 2), F)], ("tile",)),
    GraphCase("static_slices", lambda x: x[:, 1:3, ::2] + x[:, :2, 1::2] - x[:, -2:, :3], [((4, 6), F)], ("slice",)),
    GraphCase("index_and_split", lambda x: jnp.split(x, [1, 3], axis=-1)[1] * x[:, 0, None, :2] + x[:, -1:, 2:4],
              [((3, 5), F)], ("split", "gather")),
    GraphCase("dynamic_slice", lambda x, i: jax.lax.dynamic_slice_in_dim(x, i[:, 0].sum(), 3, axis=1)
              + jax.lax.dynamic_slice_in_dim(x, 1, 3, axis=1), [((6, 2), F), ((1,), I)], ("dynamic_slice",),
              int_range=(0, 5)),
    GraphCase("embedding_take", lambda ids: jnp.take(jnp.asarray(_TABLE), ids, axis=0), [((5,), I)], ("gather",),
              int_range=(0, 10)),
    # ids out of the table (JAX fills NaN; negative ids from -10 wrap): the gather_rows rewrite's GatherNd
    GraphCase("embedding_take_out_of_range", lambda ids: jnp.take(jnp.asarray(_TABLE), ids, axis=0), [((5,), I)],
              ("gather",), int_range=(-13, 13)),
    GraphCase("take_axis1", lambda x, ids: jnp.take(x, ids[0], axis=1), [((4, 3), F), ((2,), I)], ("gather",),
              int_range=(0, 4)),
    GraphCase("take_along_axis", lambda x, ids: jnp.take_along_axis(x, ids, axis=-1), [((3, 5), F), ((3, 2), I)],
              ("gather",), int_range=(0, 5)),
    GraphCase("take_along_middle_axis", lambda x, ids: jnp.take_along_axis(
        x, jnp.broadcast_to((ids[:, :1] - 1)[:, :, None], (x.shape[0], 1, x.shape[2])), axis=1)[:, 0]
        + jnp.take_along_axis(x, ids[:, :, None] % 5, axis=1).sum(1), [((5, 4), F), ((4,), I)], ("gather",),
              int_range=(0, 6)),
    GraphCase("take_along_last_axis_rank3", lambda x, ids: jnp.take_along_axis(x, ids, axis=-1),
              [((3, 5), F), ((3, 2), I)], ("gather",), int_range=(0, 5)),
    GraphCase("scan_fori_unrolled", lambda x: jax.lax.fori_loop(0, 3, lambda i, c: c * 0.5 + jnp.sin(c), x)
              + jax.lax.scan(lambda c, t: (c + t, c * t), x[:, 0], jnp.swapaxes(x, 0, 1))[1].sum(0)[:, None],
              [((4, 3), F)], ("scan",)),
    GraphCase("batch_iota", lambda x, ids: x[jax.lax.iota(jnp.int32, x.shape[0]), ids[:, 0]]
              * (1 + jax.lax.broadcasted_iota(jnp.float32, x.shape[:1], 0))[:, None], [((4, 3), F), ((1,), I)],
              ("iota", "gather"), int_range=(0, 4)),
    GraphCase("row_lookup", lambda x, ids: jnp.asarray(_TABLE)[ids[:, 0], ids[:, 1] % 4] + x[:, 0],
              [((2,), F), ((2,), I)], ("gather",), int_range=(0, 10)),
]
