"""Flax multi-head dot-product attention -> layers tfjs 4.22 has (it has no MultiHeadAttention).

``nn.MultiHeadDotProductAttention`` / ``nn.SelfAttention`` (Linen) and
``nnx.MultiHeadAttention`` (NNX, incl. grouped key/value heads) on (batch,
length, features) inputs with up to four key/value heads become one product
over all heads (``topology/layers/attention_merged.py``); with more, per head h::

    q_h = Rescaling(1/sqrt(D))(Dense(D)(x_q))     # kernel W_q[:, h, :], bias b_q[h]
    k_h = Dense(D)(x_k);  v_h = Dense(D)(x_v)
    a_h = Dot(axes=[2, 1])([softmax(Dot(axes=[2, 2])([q_h, k_h])), v_h])

then ``Dense(out)(Concatenate([a_0, ..., a_H-1]))`` with the output kernel
(H, D, out) reshaped to (H*D, out): the same sums Flax computes, with the
query scaled before the product as Flax does. Called with one input it is
self-attention; with two or three (query, key[, value]) cross-attention.
A ``mask=`` (constant, or a padding mask from one input) and ``is_causal=True``
mask each head's scores before the softmax (``topology/layers/attention_mask.py``).

The module's submodule weights (query/key/value/out) and its call keywords
(mask, decode, ...) come from the tracer's :func:`topology.trace_kit.call_context.call_context`.
"""
from __future__ import annotations

import math
from typing import Any

from topology.graph import LayerNode, WeightBinding
from topology.layers.attention_mask import MaskPlan, apply_mask, mask_nodes, plan_mask
from topology.layers.attention_merged import MAX_KV_HEADS, merged_heads_attention
from topology.layers.base import Case, LayerKind, keras_shape, layer_base
from topology.layers.dense import dense_config
from topology.trace_kit.call_context import CallContext
from topology.trace_kit.errors import unsupported
from topology.vocabulary.tensors import TensorRef


def _read_attrs(module: Any, context: CallContext) -> dict:
    from flax import linen
    from flax.linen import attention as linen_attention
    from flax.nnx.nn import attention as nnx_attention

    fail = context.unsupported
    kwargs = context.kwargs
    if getattr(module, "normalize_qk", False):
        raise fail("normalize_qk=True", "QK LayerNorm sits inside the attention; use normalize_qk=False")
    causal = bool(kwargs.get("is_causal", False))
    if bool(getattr(module, "decode", False)) or kwargs.get("decode"):
        raise fail("autoregressive decoding (decode=True)", "convert the model with decode=False")
    if kwargs.get("inputs_kv") is not None:
        raise fail("inputs_kv=", "pass the key/value input positionally: attn(q, kv)")
    if module.attention_fn not in (linen_attention.dot_product_attention, nnx_attention.dot_product_attention):
        raise fail("a custom attention_fn", "use the default dot_product_attention")
    for name in ("qkv_dot_general", "out_dot_general", "qkv_dot_general_cls", "out_dot_general_cls",
                 "qk_attn_weights_einsum_cls", "attn_weights_value_einsum_cls"):
        if getattr(module, name, None) is not None:
            raise fail(f"{name}=", "use the default dot products")
    # A Linen subclass that overrides __call__ is traced as a whole: its own code would be lost.
    known_calls = (linen.MultiHeadDotProductAttention.__call__, linen.SelfAttention.__call__)
    if isinstance(module, linen.Module) and type(module).__call__ not in known_calls:
        raise fail(f"{type(module).__name__}.__call__ (a MultiHeadDotProductAttention subclass)",
                   "call nn.MultiHeadDotProductAttention from your module instead of overriding __call__")
    return {"_variables": {sub: context.variables(sub) for sub in ("query", "key", "value", "out")},
            "_path": "/".join(context.path), "_causal": causal, "_has_mask": kwargs.get("mask") is not None,
            "_fail": fail}


def _param(variables: dict, sub: str, name: str, path: str, optional: bool = False) -> TensorRef | None:
    ref = variables.get(sub, {}).get(("params", name))
    if ref is None and not optional:
        raise KeyError("/".join(p for p in ("params", path, sub, name) if p))  # reported as MISSING_PARAMETER
    return ref


def _head_weights(kernel: TensorRef, bias: TensorRef | None, head: int) -> list[WeightBinding]:
    # DenseGeneral kernels are (in, heads, head_dim) and biases (heads, head_dim).
    take_kernel = lambda k, h=head: k[:, h, :]  # noqa: E731
    weights = [WeightBinding("kernel", keras_shape(kernel, take_kernel), kernel, take_kernel)]
    if bias is not None:
        take_bias = lambda b, h=head: b[h]  # noqa: E731
        weights.append(WeightBinding("bias", keras_shape(bias, take_bias), bias, take_bias))
    return weights


def _expand(kind: LayerKind, name: str, attrs: dict, inputs: list[str], variables: dict, origin: str,
            output_shape: Any) -> list[LayerNode]:
    shapes = attrs["_input_shapes"]
    if not inputs or any(len(s) != 3 for s in shapes):
        raise unsupported(f"attention on inputs of shapes {shapes} in layer {origin}", "",
                           "only (batch, length, features) inputs convert; reshape other layouts first")
    q_in = inputs[0]
    k_in = inputs[1] if len(inputs) > 1 else q_in
    v_in = inputs[2] if len(inputs) > 2 else k_in
    q_shape = shapes[0]
    k_shape = shapes[1] if len(shapes) > 1 else q_shape
    found = attrs["_variables"]
    path = attrs.get("_path", "")
    wq, wk, wv, wo = (_param(found, sub, "kernel", path) for sub in ("query", "key", "value", "out"))
    bq, bk, bv, bo = (_param(found, sub, "bias", path, optional=True) for sub in ("query", "key", "value", "out"))
    if len(wq.shape) != 3 or len(wk.shape) != 3 or len(wo.shape) != 3 or wq.shape[1] % wk.shape[1]:
        raise unsupported(f"attention kernels of shapes {wq.shape} / {wo.shape} in layer {origin}", "",
                           "expected (features, heads, head_dim) projections and a (heads, head_dim, out) output")
    heads, head_dim, kv_heads, out_features = wq.shape[1], wq.shape[2], wk.shape[1], wo.shape[-1]
    q_len, k_len = q_shape[1], k_shape[1]
    nodes: list[LayerNode] = []

    def add(suffix: str, class_name: str, config: dict, layer_inputs: list[str], shape: tuple,
            weights: list[WeightBinding] | None = None) -> str:
        nodes.append(LayerNode(f"{name}.{suffix}", class_name, config, layer_inputs, weights or [], shape, origin))
        return nodes[-1].name

    plan = _mask_plan(attrs, q_len, k_len)
    if kv_heads <= MAX_KV_HEADS:  # every head in one product (attention_merged.py); per head below
        return merged_heads_attention(name, (q_in, k_in, v_in), (q_len, k_len), (wq, wk, wv, wo), (bq, bk, bv, bo),
                                      plan, output_shape, origin)
    shared = None
    if plan is not None and plan.input_layer is not None:
        mask_layers, shared = mask_nodes(plan, name, q_len, k_len, origin)
        nodes += mask_layers
    keys, values = [], []
    for g in range(kv_heads):
        keys.append(add(f"key_{g}", "Dense", dense_config(head_dim, bk is not None), [k_in], (k_len, head_dim),
                        _head_weights(wk, bk, g)))
        values.append(add(f"value_{g}", "Dense", dense_config(head_dim, bv is not None), [v_in], (k_len, head_dim),
                          _head_weights(wv, bv, g)))
    scale = layer_base(scale=1.0 / math.sqrt(head_dim), offset=0.0)
    heads_out = []
    for h in range(heads):
        g = h // (heads // kv_heads)  # grouped-query attention: query head h reads key/value head g
        query = add(f"query_{h}", "Dense", dense_config(head_dim, bq is not None), [q_in], (q_len, head_dim),
                    _head_weights(wq, bq, h))
        query = add(f"query_{h}_scaled", "Rescaling", scale, [query], (q_len, head_dim))
        scores = add(f"scores_{h}", "Dot", layer_base(axes=[2, 2], normalize=False), [query, keys[g]], (q_len, k_len))
        if plan is not None:
            nodes += apply_mask(plan, shared, f"{name}.masked_{h}", scores, q_len, k_len, origin)
            scores = nodes[-1].name
        weights = add(f"weights_{h}", "Activation", layer_base(activation="softmax"), [scores], (q_len, k_len))
        heads_out.append(add(f"head_{h}", "Dot", layer_base(axes=[2, 1], normalize=False), [weights, values[g]],
                             (q_len, head_dim)))
    joined = heads_out[0] if heads == 1 else add(
        "heads", "Concatenate", layer_base(axis=-1), heads_out, (q_len, heads * head_dim))
    flat = lambda k: k.reshape(-1, k.shape[-1])  # noqa: E731  (H, D, out) -> (H*D, out), head-major like Concatenate
    out_weights = [WeightBinding("kernel", keras_shape(wo, flat), wo, flat)]
    if bo is not None:
        out_weights.append(WeightBinding("bias", tuple(bo.shape), bo))
    nodes.append(LayerNode(name, "Dense", dense_config(out_features, bo is not None), [joined], out_weights,
                           output_shape, origin))
    return nodes


def _mask_plan(attrs: dict, q_len: int, k_len: int) -> MaskPlan | None:
    """The mask= value the tracer recorded (topology/trace/side_inputs.py) and is_causal, identified."""
    side = attrs.get("_side", {})
    if attrs.get("_has_mask") and "mask" not in side:  # never marked: a mask the tracer could not see
        raise attrs["_fail"]("a mask= the tracer did not record", "pass the mask as mask= to the attention call")
    return plan_mask(side.get("mask"), attrs.get("_causal", False), q_len, k_len, attrs["_fail"])


def _cases() -> tuple[Case, ...]:
    import flax.linen as nn
    import jax.numpy as jnp
    from flax import nnx

    class CrossAttention(nn.Module):  # query from one projection, key/value from another
        @nn.compact
        def __call__(self, x):
            return nn.MultiHeadDotProductAttention(2, qkv_features=6)(nn.Dense(5)(x), nn.Dense(4)(x))

    class TwiceSame(nn.Module):  # the same tensor passed as query, key and value
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(6)(x)
            return nn.MultiHeadDotProductAttention(3)(x, x, x)

    class NnxSelf(nnx.Module):
        def __init__(self, **kwargs: Any):
            self.attn = nnx.MultiHeadAttention(in_features=6, decode=False, rngs=nnx.Rngs(0), **kwargs)

        def __call__(self, x):
            return self.attn(x)

    class Causal(nn.Module):  # a constant mask: nn.make_causal_mask on the token axis
        @nn.compact
        def __call__(self, x):
            return nn.MultiHeadDotProductAttention(2)(x, mask=nn.make_causal_mask(jnp.ones(x.shape[:2])))

    class Causal5(nn.Module):  # more heads than one product takes: per head, with a constant mask
        @nn.compact
        def __call__(self, x):
            return nn.MultiHeadDotProductAttention(5)(x, mask=nn.make_causal_mask(jnp.ones(x.shape[:2])))

    class TokenMasked(nn.Module):  # padding (token id 0) from the input, optionally also causal
        kind: str = "pair"

        @nn.compact
        def __call__(self, tokens):
            x = nn.Embed(7, 6)(tokens)
            keep = tokens > 0
            if self.kind == "key":
                mask = keep[:, None, None, :]
            elif self.kind == "pair":
                mask = nn.make_attention_mask(keep, keep)
            else:
                mask = nn.combine_masks(nn.make_attention_mask(keep, keep), nn.make_causal_mask(tokens))
            return nn.SelfAttention(2, qkv_features=4)(x, mask=mask)

    class NnxMasked(nnx.Module):
        def __init__(self, causal: bool, padding: bool):
            self.embed = nnx.Embed(7, 6, rngs=nnx.Rngs(0))
            self.attn = nnx.MultiHeadAttention(2, 6, decode=False, rngs=nnx.Rngs(1))
            self.causal, self.padding = causal, padding

        def __call__(self, tokens):
            mask = nnx.make_attention_mask(tokens > 0, tokens > 0) if self.padding else None
            return self.attn(self.embed(tokens), mask=mask, is_causal=self.causal)

    tokens = dict(input_dtype="int32", input_range=(0, 7))
    return (
        Case("linen-mha-causal-mask", Causal, (5, 4)),
        Case("linen-self-attention-padding-mask", lambda: TokenMasked("pair"), (6,), **tokens),
        Case("linen-self-attention-key-padding-mask", lambda: TokenMasked("key"), (6,), **tokens),
        Case("linen-self-attention-padding-and-causal", lambda: TokenMasked("pair+causal"), (6,), **tokens),
        Case("nnx-mha-is-causal", lambda: NnxMasked(True, False), (5,), **tokens),
        Case("nnx-mha-padding-mask", lambda: NnxMasked(False, True), (5,), **tokens),
        Case("nnx-mha-padding-mask-and-is-causal", lambda: NnxMasked(True, True), (5,), **tokens),
        Case("linen-mha-self", lambda: nn.MultiHeadDotProductAttention(2), (5, 4)),
        Case("linen-mha-one-head-no-bias", lambda: nn.MultiHeadDotProductAttention(1, use_bias=False), (4, 3)),
        Case("linen-mha-qkv-out-features", lambda: nn.MultiHeadDotProductAttention(
            4, qkv_features=8, out_features=3), (6, 5)),
        Case("linen-self-attention", lambda: nn.SelfAttention(2, qkv_features=4), (5, 3)),
        Case("linen-mha-cross", CrossAttention, (7, 3)),
        Case("linen-mha-same-tensor-thrice", TwiceSame, (4, 5)),
        Case("nnx-mha-self", lambda: NnxSelf(num_heads=2), (5, 6)),
        Case("nnx-mha-grouped-kv", lambda: NnxSelf(num_heads=4, qkv_features=8, num_kv_heads=2), (5, 6)),
        Case("linen-mha-head-dim-4", lambda: nn.MultiHeadDotProductAttention(2, qkv_features=8), (5, 3)),  # 1/2 folded
        Case("linen-mha-five-heads-per-head", lambda: nn.MultiHeadDotProductAttention(5, qkv_features=10), (4, 3)),
        Case("linen-mha-five-heads-causal", Causal5, (4, 5)),
    )


KIND = LayerKind(
    key="attention",
    keras_class="Dense",  # the composition ends in the output Dense
    flax_modules=("nn.MultiHeadDotProductAttention", "nn.SelfAttention", "nnx.MultiHeadAttention"),
    make_config=dense_config,
    summary="multi-head dot-product attention on (batch, length, features): up to 4 key/value heads in one "
            "product (one Dense per projection, rows per token and head, other heads' scores masked), more heads "
            "per head (Dense, Dot, softmax, Dot, Concatenate); output Dense (self-, cross- and grouped-query "
            "attention); masks: "
            "constant ones (nn.make_causal_mask, is_causal=True) as an exact BatchNormalization on the scores, "
            "padding masks from a (batch, length) input (0 = padding: attention_mask or token ids) with "
            "RepeatVector/Permute/Multiply/Add, and both combined",
    flax_classes=("flax.linen:MultiHeadDotProductAttention", "flax.nnx:MultiHeadAttention"),
    read_attrs=_read_attrs,
    expand=_expand,
    side_keywords=("mask",),
    cases=_cases,
)
