"""Multi-head attention with every head in one product: a few layers instead of seven per head.

tfjs 4.22's ``Dot`` multiplies rank-3 tensors only and no layer moves an axis
into the batch, so heads cannot become a batch axis. They can become rows: a
(length, heads * head_dim) projection viewed as (length * heads, head_dim) has
one row per (token, head), token-major, at no cost (a Reshape). Then::

    q = Reshape(Lq*H, D)(Dense(H*D)(x_q))      # 1/sqrt(D) folded into the kernel when exact
    k = Reshape(Lk*G, D)(Dense(G*D)(x_k));  v = Reshape(Lk*G, D)(Dense(G*D)(x_v))
    s = Dot(axes=[2, 2])([q, k])               # (Lq*H, Lk*G): every head against every head
    s = mask(s)                                # rows (i, h) keep columns (j, g) with g = h // (H/G)
    a = Dot(axes=[2, 1])([softmax(s), v])      # (Lq*H, D): row (i, h) is head h's output at token i
    y = Dense(out)(Reshape(Lq, H*D)(a))        # the heads side by side, as Flax concatenates them

The products of a head with another head's keys are computed and thrown away
(G times the work of the scores), so this form is used for at most
:data:`MAX_KV_HEADS` key/value heads, where one product costs less than the
per-head layers' overhead. The mask is one exact BatchNormalization on the
flattened scores (``scores * gamma + beta``): other heads' columns get -2 * BIG,
masked columns (the user's mask, constant or from an input) -BIG, so a row
masked entirely still averages over its own head's keys only, as Flax does.
"""
from __future__ import annotations

import math

import numpy as np

from topology.graph import LayerNode, WeightBinding
from topology.layers.attention_mask import BIG, MaskPlan, mask_nodes
from topology.layers.base import keras_shape, layer_base
from topology.layers.batchnorm import batch_norm_config
from topology.layers.dense import dense_config
from topology.vocabulary.tensors import TensorRef

MAX_KV_HEADS = 4


def merged_heads_attention(name: str, inputs: tuple[str, str, str], lengths: tuple[int, int],
                           kernels: tuple[TensorRef, ...], biases: tuple[TensorRef | None, ...],
                           plan: MaskPlan | None, output_shape: tuple, origin: str) -> list[LayerNode]:
    """The layers of one attention call; the last (the output Dense) is named ``name``.

    ``inputs`` are the query, key and value sources; ``kernels``/``biases`` the query, key, value
    and output DenseGeneral parameters ((in, heads, D) kernels, (heads, D) biases, (H, D, out) output).

    Example:
        >>> MAX_KV_HEADS
        4
    """
    q_in, k_in, v_in = inputs
    q_len, k_len = lengths
    wq, wk, wv, wo = kernels
    bq, bk, bv, bo = biases
    heads, head_dim, kv_heads = wq.shape[1], wq.shape[2], wk.shape[1]
    nodes: list[LayerNode] = []

    def add(suffix: str | None, class_name: str, config: dict, layer_inputs: list[str], shape: tuple,
            weights: list[WeightBinding] | None = None) -> str:
        nodes.append(LayerNode(f"{name}.{suffix}" if suffix else name, class_name, config, layer_inputs,
                               weights or [], tuple(shape), origin))
        return nodes[-1].name

    root = math.sqrt(head_dim)
    exact_fold = root == 2.0 ** round(math.log2(root))  # dividing by a power of two rounds nothing
    fold = 1.0 / root if exact_fold else 1.0

    def project(suffix: str, source: str, kernel: TensorRef, bias: TensorRef | None, rows: int, count: int,
                scale: float = 1.0) -> str:
        flat_kernel = lambda k, s=scale: k.reshape(k.shape[0], -1) * np.float32(s)  # noqa: E731
        flat_bias = lambda b, s=scale: b.reshape(-1) * np.float32(s)  # noqa: E731
        weights = [WeightBinding("kernel", keras_shape(kernel, flat_kernel), kernel, flat_kernel)]
        if bias is not None:
            weights.append(WeightBinding("bias", keras_shape(bias, flat_bias), bias, flat_bias))
        out = add(suffix, "Dense", dense_config(count * head_dim, bias is not None), [source], (rows, count * head_dim),
                  weights)
        if suffix == "query" and not exact_fold:
            out = add("query_scaled", "Rescaling", layer_base(scale=1.0 / root, offset=0.0), [out],
                      (rows, count * head_dim))
        return add(f"{suffix}_rows", "Reshape", layer_base(target_shape=[rows * count, head_dim]), [out],
                   (rows * count, head_dim))

    query = project("query", q_in, wq, bq, q_len, heads, fold)
    key = project("key", k_in, wk, bk, k_len, kv_heads)
    value = project("value", v_in, wv, bv, k_len, kv_heads)
    score_shape = (q_len * heads, k_len * kv_heads)
    scores = add("scores", "Dot", layer_base(axes=[2, 2], normalize=False), [query, key], score_shape)
    scores = _masked(add, nodes, name, scores, plan, heads, kv_heads, q_len, k_len, origin)
    weights = add("weights", "Activation", layer_base(activation="softmax"), [scores], score_shape)
    mixed = add("mixed", "Dot", layer_base(axes=[2, 1], normalize=False), [weights, value], (q_len * heads, head_dim))
    joined = add("heads", "Reshape", layer_base(target_shape=[q_len, heads * head_dim]), [mixed],
                 (q_len, heads * head_dim))
    flat = lambda k: k.reshape(-1, k.shape[-1])  # noqa: E731  (H, D, out) -> (H*D, out), head-major
    out_weights = [WeightBinding("kernel", keras_shape(wo, flat), wo, flat)]
    if bo is not None:
        out_weights.append(WeightBinding("bias", tuple(bo.shape), bo))
    add(None, "Dense", dense_config(wo.shape[-1], bo is not None), [joined], output_shape, out_weights)
    return nodes


def _masked(add, nodes: list[LayerNode], name: str, scores: str, plan: MaskPlan | None, heads: int, kv_heads: int,
            q_len: int, k_len: int, origin: str) -> str:
    """Scores with other heads' columns at -2 * BIG and the user's masked columns at -BIG."""
    rows, cols = q_len * heads, k_len * kv_heads
    group = heads // kv_heads
    own = (np.arange(heads)[:, None] // group == np.arange(kv_heads)[None, :])  # (H, G): head h reads group g
    own = np.broadcast_to(own[None, :, None, :], (q_len, heads, k_len, kv_heads)).reshape(rows, cols)
    if heads == 1 == kv_heads and plan is None:
        return scores
    if plan is not None and plan.input_layer is not None:  # M from an input: tile it to (token, head) rows/cols
        mask_layers, (mask, _) = mask_nodes(plan, name, q_len, k_len, origin)
        nodes += mask_layers
        cells = add("mask_cells", "Reshape", layer_base(target_shape=[q_len, k_len, 1]), [mask], (q_len, k_len, 1))
        per_col = cells if kv_heads == 1 else add("mask_kv_heads", "Concatenate", layer_base(axis=-1),
                                                  [cells] * kv_heads, (q_len, k_len, kv_heads))
        per_col = add("mask_cols", "Reshape", layer_base(target_shape=[q_len, 1, cols]), [per_col], (q_len, 1, cols))
        per_row = per_col if heads == 1 else add("mask_heads", "Concatenate", layer_base(axis=2),
                                                 [per_col] * heads, (q_len, heads, cols))
        tiled = add("mask_tiled", "Reshape", layer_base(target_shape=[rows, cols]), [per_row], (rows, cols))
        bias = add("mask_tiled_bias", "Rescaling", layer_base(scale=BIG, offset=-BIG), [tiled], (rows, cols))
        kept = add("scores_kept", "Multiply", layer_base(), [scores, tiled], (rows, cols))
        scores = add("scores_masked", "Add", layer_base(), [kept, bias], (rows, cols))
        gamma, beta = own.astype(np.float32), np.where(own, 0.0, -2 * BIG)
    else:
        constant = np.ones((q_len, k_len), np.float32) if plan is None else plan.constant.astype(np.float32)
        tiled = np.broadcast_to(constant[:, None, :, None], (q_len, heads, k_len, kv_heads)).reshape(rows, cols)
        gamma = np.where(own, tiled, 0.0)
        beta = np.where(own, (tiled - 1.0) * BIG, -2 * BIG)
    size = rows * cols
    flat = add("scores_flat", "Reshape", layer_base(target_shape=[size]), [scores], (size,))
    weights = [WeightBinding("gamma", (size,), constant=np.asarray(gamma, np.float32).reshape(-1)),
               WeightBinding("beta", (size,), constant=np.asarray(beta, np.float32).reshape(-1)),
               WeightBinding("moving_mean", (size,), constant=np.zeros(size, np.float32)),
               WeightBinding("moving_variance", (size,), constant=np.ones(size, np.float32))]
    own_heads = add("scores_own_heads", "BatchNormalization", batch_norm_config(-1, epsilon=0.0), [flat], (size,),
                    weights)
    return add("scores_blocks", "Reshape", layer_base(target_shape=[rows, cols]), [own_heads], (rows, cols))
