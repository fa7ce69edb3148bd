"""Contractions: ``dot_general`` to MatMul/BatchMatMulV2, ``conv_general_dilated`` to Conv2D/DepthwiseConv2dNative.

A dot without batch axes is one MatMul over the flattened leading axes (so a bias and an
activation can later fuse into ``_FusedMatMul``); transposes are avoided with its adjoint flags
where the layout allows. With batch axes, BatchMatMulV2 without adjoint flags, the operands in
whichever order needs fewer transposes (``A·B`` or ``(Bᵀ·Aᵀ)ᵀ``): TF.js 4.22's wasm backend sends
only a batch-1 product with both flags off to XNNPACK and runs every other one in a plain loop,
measured 3-5× slower (bench/matmul_wasm.mjs). For the same reason, attention-sized products over a
(batch, heads) pair of batch axes run one product per head (``Unpack``, ``BatchMatMulV2`` over the
batch alone, ``Pack``): batch 1 then takes the fast path; any batch stays correct. Smaller ones
(ViT-Ti's 37 tokens) run all heads in one product of the batch alone against a block-diagonal
operand (``_block_diagonal``): H× the multiply-adds, on the fast path at batch 1.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from topology.graphdef.nodes import GraphBuilder, Value, attr_b, attr_i, attr_ints, attr_s, attr_type, is_static
from topology.graphdef.ops import GraphCase, handles
from topology.graphdef.ops.elementwise import g_unsupported
from topology.graphdef.ops.shape import strided_slice


def _prod(dims: list) -> Any:
    out: Any = 1
    for d in dims:
        out = out * d
    return out


@handles("dot_general")
def dot_general(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    lhs, rhs = values
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lc, rc, lb, rb = map(tuple, (lc, rc, lb, rb))
    lfree = tuple(d for d in range(lhs.rank) if d not in lc and d not in lb)
    rfree = tuple(d for d in range(rhs.rank) if d not in rc and d not in rb)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    dtype = np.dtype("float32") if lhs.dtype.kind == "f" or rhs.dtype.kind == "f" else lhs.dtype
    lhs, rhs = g.cast(lhs, dtype), g.cast(rhs, dtype)
    batch = tuple(lhs.shape[d] for d in lb)
    m, k = _prod([lhs.shape[d] for d in lfree]), _prod([lhs.shape[d] for d in lc])
    n = _prod([rhs.shape[d] for d in rfree])
    if batch:
        return _batched(g, lhs, rhs, (lb, lfree, lc), (rb, rfree, rc), (batch, m, k, n), dtype, out_shape)
    # Prefer the layout the operand already has: (.., M, K) or (.., K, M) [adjoint].
    lhs_plain, lhs_adj = (*lfree, *lc), (*lc, *lfree)
    adj_x = lhs_adj == tuple(range(lhs.rank)) and lhs_plain != lhs_adj
    rhs_plain, rhs_adj = (*rc, *rfree), (*rfree, *rc)
    adj_y = rhs_adj == tuple(range(rhs.rank)) and rhs_plain != rhs_adj
    a = g.reshape(g.transpose(lhs, lhs_adj if adj_x else lhs_plain), (k, m) if adj_x else (m, k))
    b = g.reshape(g.transpose(rhs, rhs_adj if adj_y else rhs_plain), (n, k) if adj_y else (k, n))
    out = g.op("MatMul", [a, b], {"transpose_a": attr_b(adj_x), "transpose_b": attr_b(adj_y),
                                  "T": attr_type(dtype)}, (m, n), dtype)
    return g.reshape(out, out_shape)


# Per head when one head's product has at least this many multiply-adds: below it (ViT-Ti's 37
# tokens: 88 K) the extra Unpack/Pack cost more than the plain loop (measured in Node wasm), and the
# heads go block-diagonal instead (ViT-Ti in Node wasm: 24 products 4.4 -> 2.1 ms, the model 0.90×).
PER_HEAD_MIN_MACS = 1 << 18
PER_HEAD_MAX_HEADS = 8


def _batched(g: GraphBuilder, lhs: Value, rhs: Value, left: tuple, right: tuple, sizes: tuple, dtype: Any,
             out_shape: tuple) -> Value:
    (lb, lfree, lc), (rb, rfree, rc), (batch, m, k, n) = left, right, sizes
    identity = lambda x, perm: tuple(perm) == tuple(range(x.rank))  # noqa: E731
    if len(batch) == 2 and is_static(batch[1]) and 2 <= batch[1] <= PER_HEAD_MAX_HEADS \
            and all(is_static(d) for d in (m, n, k)) and m * n * k < PER_HEAD_MIN_MACS:
        return _block_diagonal(g, lhs, rhs, left, right, sizes, dtype, out_shape)
    # A·B needs lhs as (batch, M, K) and rhs as (batch, K, N); (Bᵀ·Aᵀ)ᵀ needs rhs as (batch, N, K), lhs as (batch, K, M).
    direct = [(*lb, *lfree, *lc), (*rb, *rc, *rfree)]
    swapped = [(*rb, *rfree, *rc), (*lb, *lc, *lfree)]
    transposes = lambda perms, xs: sum(not identity(x, p) for x, p in zip(xs, perms))  # noqa: E731
    swap = transposes(swapped, (rhs, lhs)) < transposes(direct, (lhs, rhs))
    if swap:
        lhs, rhs, m, n, (lperm, rperm) = rhs, lhs, n, m, swapped
    else:
        lperm, rperm = direct
    a = g.reshape(g.transpose(lhs, lperm), (*batch, m, k))
    b = g.reshape(g.transpose(rhs, rperm), (*batch, k, n))
    heads = _prod(batch[1:]) if len(batch) >= 2 and all(is_static(d) for d in batch[1:]) else 1
    if 2 <= heads <= PER_HEAD_MAX_HEADS and all(is_static(d) for d in (m, n, k)) and m * n * k >= PER_HEAD_MIN_MACS:
        out = _per_head(g, a, b, (batch[0], heads, m, k, n), dtype)
    else:
        out = _batch_matmul(g, a, b, (*batch, m, n), dtype)
    out = g.reshape(out, (*batch, m, n))
    if swap:
        out = g.transpose(out, (*range(len(batch)), len(batch) + 1, len(batch)))
    return g.reshape(out, out_shape)


def _block_diagonal(g: GraphBuilder, lhs: Value, rhs: Value, left: tuple, right: tuple, sizes: tuple, dtype: Any,
                    out_shape: tuple) -> Value:
    """Every head's product in one product of batch ``outer``: ``[outer, M, H·K] · [outer, H·K, H·N]``.

    The right operand is block diagonal (head h's K rows meet only head h's N columns), built by one
    broadcasting Mul with a 0/1 mask; the masked terms are exact zeros for finite operands. The
    operands go in whichever order needs fewer transposes (``A·B`` or ``(Bᵀ·Aᵀ)ᵀ``).
    """
    (lb, lfree, lc), (rb, rfree, rc), ((outer, heads), m, k, n) = left, right, sizes
    moved = lambda x, perm: int(tuple(perm) != tuple(range(x.rank)))  # noqa: E731
    plain = moved(lhs, (lb[0], *lfree, lb[1], *lc)) + min(moved(rhs, (rb[0], rb[1], *rc, *rfree)),
                                                          moved(rhs, (rb[0], *rc, rb[1], *rfree)))
    swapped = moved(rhs, (rb[0], *rfree, rb[1], *rc)) + min(moved(lhs, (lb[0], lb[1], *lc, *lfree)),
                                                            moved(lhs, (lb[0], *lc, lb[1], *lfree)))
    if swapped < plain:  # the result comes out as [outer, N, H, M]
        out, perm = _block_product(g, rhs, lhs, right, left, (outer, heads, n, k, m), dtype), (0, 2, 3, 1)
    else:  # [outer, M, H, N]
        out, perm = _block_product(g, lhs, rhs, left, right, (outer, heads, m, k, n), dtype), (0, 2, 1, 3)
    return g.reshape(g.transpose(out, perm), out_shape)


def _block_product(g: GraphBuilder, lhs: Value, rhs: Value, left: tuple, right: tuple, sizes: tuple,
                   dtype: Any) -> Value:
    (lb, lfree, lc), (rb, rfree, rc), (outer, heads, m, k, n) = left, right, sizes
    a = g.reshape(g.transpose(lhs, (lb[0], *lfree, lb[1], *lc)), (outer, m, heads * k))
    eye = np.eye(heads, dtype=dtype)
    by_rows, by_columns = (rb[0], rb[1], *rc, *rfree), (rb[0], *rc, rb[1], *rfree)
    if by_columns == tuple(range(rhs.rank)) and by_rows != by_columns:  # rhs is [outer, K, H, N] (the values)
        b = g.reshape(rhs, (outer, 1, k, heads * n))
        mask, spread = np.repeat(eye, n, axis=1).reshape(1, heads, 1, heads * n), (outer, heads, k, heads * n)
    else:  # rhs as [outer, H·K, 1, N]
        b = g.reshape(g.transpose(rhs, by_rows), (outer, heads * k, 1, n))
        mask, spread = np.repeat(eye, k, axis=0).reshape(1, heads * k, heads, 1), (outer, heads * k, heads, n)
    block = g.op("Mul", [b, g.const(mask)], {"T": attr_type(dtype)}, spread, dtype)
    out = _batch_matmul(g, a, g.reshape(block, (outer, heads * k, heads * n)), (outer, m, heads * n), dtype)
    return g.reshape(out, (outer, m, heads, n))


def _batch_matmul(g: GraphBuilder, a: Value, b: Value, shape: tuple, dtype: Any) -> Value:
    return g.op("BatchMatMulV2", [a, b], {"adj_x": attr_b(False), "adj_y": attr_b(False), "T": attr_type(dtype)},
                shape, dtype)


def _per_head(g: GraphBuilder, a: Value, b: Value, sizes: tuple, dtype: Any) -> Value:
    outer, heads, m, k, n = sizes
    a = g.reshape(a, (outer, heads, m, k))
    b = g.reshape(b, (outer, heads, k, n))
    unpack = {"num": attr_i(heads), "axis": attr_i(1), "T": attr_type(dtype)}
    a_heads = g.op("Unpack", [a], unpack, (outer, m, k), dtype, outputs=heads)
    b_heads = g.op("Unpack", [b], unpack, (outer, k, n), dtype, outputs=heads)
    outs = [_batch_matmul(g, x, y, (outer, m, n), dtype) for x, y in zip(a_heads, b_heads)]
    return g.op("Pack", outs, {"N": attr_i(heads), "axis": attr_i(1), "T": attr_type(dtype)}, (outer, heads, m, n),
                dtype)


def _same_padding(size: int, window: int, stride: int, dilation: int) -> tuple[int, int]:
    effective = (window - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def conv_padding(x: Value, spatial: list[int], windows: list[int], strides: list[int], dilations: list[int],
                 padding: list[tuple[int, int]]) -> str | None:
    """"VALID" or "SAME" when ``padding`` is exactly what TF computes for it, else None (pad explicitly)."""
    if all(lo == 0 and hi == 0 for lo, hi in padding):
        return "VALID"
    if all(is_static(x.shape[a]) and _same_padding(x.shape[a], w, s, d) == tuple(p)
           for a, w, s, d, p in zip(spatial, windows, strides, dilations, padding)):
        return "SAME"
    return None


def pad_explicitly(g: GraphBuilder, x: Value, spatial: list[int], padding: list[tuple[int, int]], fill: float) -> Value:
    pairs = [[0, 0] for _ in range(x.rank)]
    for axis, (lo, hi) in zip(spatial, padding):
        pairs[axis] = [max(lo, 0), max(hi, 0)]
    shape = tuple(d + lo + hi if is_static(d) else d for d, (lo, hi) in zip(x.shape, pairs))
    out = g.op("PadV2", [x, g.const(np.asarray(pairs, "int32")), g.const(np.asarray(fill, x.dtype))],
               {"T": attr_type(x.dtype)}, shape, x.dtype)
    if any(lo < 0 or hi < 0 for lo, hi in padding):
        begin, end = [0] * x.rank, [None] * x.rank
        for axis, (lo, hi) in zip(spatial, padding):
            begin[axis] = -min(lo, 0)
            end[axis] = shape[axis] + min(hi, 0) if hi < 0 else None
        cropped = tuple(shape[a] - begin[a] - (shape[a] - end[a] if end[a] is not None else 0) for a in range(x.rank))
        out = strided_slice(g, out, begin, end, [1] * x.rank, cropped)
    return out


def _dilate(g: GraphBuilder, x: Value, axis: int, factor: int) -> Value:
    # lhs dilation (transposed convolution): insert factor-1 zeros between elements along axis.
    shape = list(x.shape)
    spread = g.reshape(x, (*shape[:axis + 1], 1, *shape[axis + 1:]))
    pairs = [[0, 0] for _ in range(x.rank + 1)]
    pairs[axis + 1] = [0, factor - 1]
    padded_shape = (*shape[:axis + 1], factor, *shape[axis + 1:])
    padded = g.op("PadV2", [spread, g.const(np.asarray(pairs, "int32")), g.const(np.zeros((), x.dtype))],
                  {"T": attr_type(x.dtype)}, padded_shape, x.dtype)
    merged = g.reshape(padded, (*shape[:axis], shape[axis] * factor, *shape[axis + 1:]))
    end: list = [None] * x.rank
    end[axis] = shape[axis] * factor - (factor - 1)
    return strided_slice(g, merged, [0] * x.rank, end, [1] * x.rank,
                         (*shape[:axis], end[axis], *shape[axis + 1:]))


@handles("conv_general_dilated")
def conv_general_dilated(g: GraphBuilder, eqn: Any, values: list[Value]) -> Value:
    lhs, rhs = values
    p = eqn.params
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = (tuple(s) for s in (dn.lhs_spec, dn.rhs_spec, dn.out_spec))
    n_spatial = lhs.rank - 2
    if n_spatial not in (1, 2) or p.get("batch_group_count", 1) != 1:
        raise g_unsupported(eqn, f"a {n_spatial}-D convolution" if n_spatial not in (1, 2) else "batch_group_count")
    x = g.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))  # NHWC
    w = g.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))  # HWIO
    strides, dilations = list(p["window_strides"]), list(p["rhs_dilation"] or [1] * n_spatial)
    padding = [tuple(int(v) for v in pair) for pair in p["padding"]]
    for axis, factor in enumerate(p["lhs_dilation"] or [1] * n_spatial):
        if factor > 1:
            x = _dilate(g, x, 1 + axis, int(factor))
    if n_spatial == 1:  # as a 2-D convolution over a height of 1
        x = g.reshape(x, (x.shape[0], 1, *x.shape[1:]))
        w = g.reshape(w, (1, *w.shape))
        strides, dilations, padding = [1, *strides], [1, *dilations], [(0, 0), *padding]
    windows = list(w.shape[:2])
    mode = conv_padding(x, [1, 2], windows, strides, dilations, padding)
    if mode is None:
        x, mode = pad_explicitly(g, x, [1, 2], padding, 0.0), "VALID"
    out_nhwc = tuple(eqn.outvars[0].aval.shape[d] for d in (out_spec[0], *out_spec[2:], out_spec[1]))
    if n_spatial == 1:
        out_nhwc = (out_nhwc[0], 1, *out_nhwc[1:])
    groups = int(p["feature_group_count"])
    attrs = {"strides": attr_ints([1, *strides, 1]), "padding": attr_s(mode), "data_format": attr_s("NHWC"),
             "dilations": attr_ints([1, *dilations, 1]), "T": attr_type("float32")}
    in_channels = x.shape[3]
    if groups == 1:
        y = g.op("Conv2D", [x, w], attrs, out_nhwc, "float32")
    elif groups == in_channels and w.shape[2] == 1 and (max(strides) == 1 or max(dilations) == 1):
        w = g.reshape(w, (w.shape[0], w.shape[1], in_channels, w.shape[3] // in_channels))
        y = g.op("DepthwiseConv2dNative", [x, w], attrs, out_nhwc, "float32")
    else:
        per_in, per_out = in_channels // groups, w.shape[3] // groups
        parts = []
        for k in range(groups):
            xs = strided_slice(g, x, [0, 0, 0, k * per_in], [None, None, None, (k + 1) * per_in], [1] * 4,
                               (*x.shape[:3], per_in))
            ws = strided_slice(g, w, [0, 0, 0, k * per_out], [None, None, None, (k + 1) * per_out], [1] * 4,
                               (*w.shape[:3], per_out))
            parts.append(g.op("Conv2D", [xs, ws], attrs, (*out_nhwc[:3], per_out), "float32"))
        y = g.op("ConcatV2", [*parts, g.scalar_int(3)], {"N": {"i": str(groups)}, "T": attr_type("float32")},
                 out_nhwc, "float32")
    if n_spatial == 1:
        y = g.reshape(y, (out_nhwc[0], *out_nhwc[2:]))
    ours = ["n", *[f"s{i}" for i in range(n_spatial)], "c"]
    target = [""] * (n_spatial + 2)
    target[out_spec[0]], target[out_spec[1]] = "n", "c"
    for i, d in enumerate(out_spec[2:]):
        target[d] = f"s{i}"
    return g.transpose(y, [ours.index(t) for t in target])


F = "float32"
_W = np.linspace(-1, 1, 4 * 3 * 2 * 6, dtype="float32")
_QKV = np.cos(np.arange(3 * 8 * 128, dtype="float32")).reshape(3, 8, 128) * 0.3


def _attention(x: Any, mask: Any) -> Any:
    q, k, v = ((x @ _QKV[i] + 0.1 * i).reshape(*x.shape[:-1], 2, 64) for i in range(3))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q / 8.0, k) + jnp.where(mask > 0.5, 0.0, -1e9)[:, None, None, :]
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
    return out.reshape(*x.shape[:-1], 128) @ _QKV[0].T
_conv = lambda x, w, **kw: jax.lax.conv_general_dilated(x, w, dimension_numbers=("NHWC", "HWIO", "NHWC"), **kw)  # noqa: E731
CASES = [
    GraphCase("matmul", lambda x: x @ _W[:12].reshape(3, 4) + 0.5, [((3,), F)], ("dot_general",)),
    GraphCase("matmul_3d_transposed", lambda x: jnp.einsum("btc,dc->btd", x, _W[:15].reshape(5, 3)),
              [((4, 3), F)], ("dot_general",)),
    GraphCase("attention_heads", lambda q, k: jax.nn.softmax(jnp.einsum("bthd,bshd->bhts", q, k), axis=-1)
              @ jnp.swapaxes(k, 1, 2), [((4, 2, 3), F), ((4, 2, 3), F)], ("dot_general",)),
    # big enough per head for the per-head lowering (64·64·64 multiply-adds); the second product's
    # operands are swapped so it needs no adjoint flag
    GraphCase("attention_per_head", lambda q, k, v: jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(
        jnp.einsum("bqhd,bkhd->bhqk", q, k) / 8.0, axis=-1), v), [((64, 2, 64), F)] * 3, ("dot_general",)),
    # ViT-Ti's form (small heads): both products are one batch-1 product against a block-diagonal operand
    GraphCase("attention_block_diagonal", lambda q, k, v: jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(
        jnp.einsum("bqhd,bkhd->bhqk", q / 4.0, k), axis=-1), v), [((5, 3, 16), F)] * 3, ("dot_general",)),
    # BERT's form: q projected then scaled after the split into heads, a padding mask added over every head
    # (`fold_scale` and `split_heads`: a Split per operand, a masked Softmax per head, one ConcatV2)
    GraphCase("attention_masked", lambda x, m: _attention(x, m), [((64, 8), F), ((64,), F)], ("dot_general",)),
    # a transformer MLP on 3-D tokens: the `gelu` rewrite leaves Erf, Mul, AddV2 between the two matmuls
    GraphCase("mlp_gelu", lambda x: jax.nn.gelu(x @ _W[:24].reshape(4, 6) + _W[24:30], approximate=False)
              @ _W[30:54].reshape(6, 4) + _W[54:58], [((5, 4), F)], ("dot_general", "erfc")),
    GraphCase("bilinear", lambda x, y: jnp.einsum("bi,bj,ij->b", x, y, _W[:12].reshape(3, 4)), [((3,), F), ((4,), F)],
              ("dot_general",)),
    GraphCase("conv_same_stride", lambda x: _conv(x, _W[:54].reshape(3, 3, 2, 3), window_strides=(2, 1),
                                                  padding="SAME"), [((5, 6, 2), F)], ("conv_general_dilated",)),
    GraphCase("conv_explicit_dilated", lambda x: _conv(x, _W[:24].reshape(2, 2, 2, 3), window_strides=(1, 1),
                                                       padding=((1, 0), (2, 1)), rhs_dilation=(2, 1)),
              [((5, 5, 2), F)], ("conv_general_dilated",)),
    GraphCase("conv_groups_depthwise", lambda x: _conv(x, _W[:36].reshape(3, 3, 1, 4), window_strides=(1, 1),
                                                       padding="SAME", feature_group_count=4)
              + _conv(x, _W[:72].reshape(3, 3, 2, 4), window_strides=(1, 1), padding="SAME", feature_group_count=2),
              [((4, 4, 4), F)], ("conv_general_dilated",)),
    GraphCase("conv_transposed", lambda x: jax.lax.conv_transpose(x, _W[:54].reshape(3, 3, 2, 3), strides=(2, 2),
                                                                  padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
              [((3, 3, 2), F)], ("conv_general_dilated",)),
    GraphCase("conv1d_nchw", lambda x: jax.lax.conv_general_dilated(x, _W[:18].reshape(3, 2, 3), (1,), ((1, 1),),
                                                                     dimension_numbers=("NCH", "OIH", "NCH")),
              [((2, 7), F)], ("conv_general_dilated",)),
]
