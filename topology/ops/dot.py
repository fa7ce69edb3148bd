"""Matrix products of two activations (``jnp.einsum``, ``@``, ``lax.dot_general``) -> tfjs ``Dot``.

Hand-written attention (HuggingFace BERT/GPT-2 style) multiplies two
activations: ``einsum("...qhd,...khd->...hqk", q, k)`` and
``einsum("...hqk,...khd->...qhd", w, v)``. tfjs 4.22's ``Dot`` layer is a
batched product of rank-3 tensors only, so each extra batch axis (the heads)
is split off: for every head index the operands are sliced (Reshape +
Cropping2D, exact copies, see ``ranges.take_range``), multiplied by one
``Dot`` with the contracted axes, and the products are stacked back
(Reshape + Concatenate) in ``dot_general``'s output order (batch axes, the
left free axis, the right free axis). Each operand must have exactly one
contracted and at most one free axis besides the batch axes.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from topology.graph import WeightBinding
from topology.layers.base import ZEROS, Case
from topology.ops import handles
from topology.ops.ranges import reshape_to, take_range
from topology.trace_kit.builder import Builder
from topology.trace_kit.errors import unsupported
from topology.trace_kit.values import Const, Pending, Tensor, as_function, root_of
from topology.vocabulary.tensors import TensorRef


def _head(builder: Builder, x: Tensor, batch_axes: tuple[int, ...], index: tuple[int, ...]) -> Tensor:
    """``x`` at ``index`` along its extra batch axes, those axes removed (an exact copy)."""
    for axis, i in zip(batch_axes, index):
        x = take_range(builder, x, axis, i, i + 1)
    keep = [d for axis, d in enumerate(x.shape) if axis not in batch_axes]
    return reshape_to(builder, x, tuple(keep))


@handles("dot_general")
def dot_general(builder: Builder, eqn: Any, values: list, where: str) -> Tensor:
    if any(isinstance(v, Const) for v in values):
        return _with_matrix(builder, eqn, values, where)
    lhs, rhs = (builder.tensor(v, where) for v in values)
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lc, rc, lb, rb = (tuple(int(a) for a in axes) for axes in (lc, rc, lb, rb))
    if not lb or lb[0] != 0 or rb[0] != 0:
        raise unsupported("a matrix product of two activations that mixes examples (not batched over axis 0)", where,
                          "keep the batch axis a batch dimension of the product, e.g. einsum('bqd,bkd->bqk', q, k)")
    lfree = [a for a in range(len(lhs.shape)) if a not in lc and a not in lb]
    rfree = [a for a in range(len(rhs.shape)) if a not in rc and a not in rb]
    if len(lc) != 1 or len(lfree) > 1 or len(rfree) > 1:
        raise unsupported(f"a matrix product of activations {lhs.shape[1:]} x {rhs.shape[1:]} contracting "
                          f"{len(lc)} axes with {len(lfree)}+{len(rfree)} free axes", where,
                          "contract one axis and keep at most one free axis per operand (reshape first)")
    if len(lfree) + len(rfree) < 2:
        raise unsupported("a matrix product of activations without two free axes (a dot of vectors)", where,
                          "multiply and sum instead, or keep a length axis on both operands")
    heads = [lhs.shape[a] for a in lb[1:]]
    out = tuple(eqn.outvars[0].aval.shape)
    products = []
    for index in itertools.product(*[range(n) for n in heads]):
        left, right = _head(builder, lhs, lb[1:], index), _head(builder, rhs, rb[1:], index)
        # Positions of the contracted axes once the extra batch axes are gone.
        laxis = lc[0] - sum(1 for a in lb[1:] if a < lc[0])
        raxis = rc[0] - sum(1 for a in rb[1:] if a < rc[0])
        shape = (out[0], left.shape[3 - laxis], right.shape[3 - raxis])
        products.append(builder.add_layer("dot", "Dot", {"axes": [laxis, raxis], "normalize": False},
                                          [left, right], shape))
    if len(products) == 1:
        return reshape_to(builder, products[0], out)
    rest = products[0].shape[1:]
    stacked = [reshape_to(builder, p, (out[0], 1, *rest)) for p in products]
    joined = builder.add_layer("heads", "Concatenate", {"axis": 1}, stacked, (out[0], len(products), *rest))
    return reshape_to(builder, joined, out)


def _with_matrix(builder: Builder, eqn: Any, values: list, where: str) -> Tensor | Pending:
    """``x @ W`` with a constant or parameter matrix W (a tied LM head: ``embed.attend(x)``) -> Dense."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if not lc and not rc:
        return _product_without_contraction(builder, eqn, values, where)
    x, w = values
    usable = (isinstance(w, Const) and not isinstance(x, Const) and (w.known or w.lazy is not None)
              and len(getattr(w.value, "shape", None) or w.lazy.shape) == 2 and not lb and not rb
              and tuple(lc) == (len(eqn.invars[0].aval.shape) - 1,))
    if not usable:
        raise unsupported("a matrix product with a weight or constant outside a layer module", where,
                          "use nn.Dense / nn.DenseGeneral, or multiply activations by a 2-D matrix on the right")
    x = builder.tensor(x, where)
    transpose = tuple(rc) == (1,)
    if w.known:
        matrix = np.asarray(w.value, np.float32)
        kernel = WeightBinding("kernel", matrix.T.shape if transpose else matrix.shape,
                               constant=np.ascontiguousarray(matrix.T if transpose else matrix))
    else:
        lazy = w.lazy
        shape = lazy.shape[::-1] if transpose else lazy.shape
        load = (lambda: np.ascontiguousarray(lazy.compute().T)) if transpose else lazy.compute
        kernel = WeightBinding("kernel", tuple(shape), TensorRef(("constant", lazy.origin), tuple(shape),
                                                                  np.dtype("float32"), load, "parameters"))
    units = kernel.shape[1]
    config = {"units": int(units), "activation": "linear", "use_bias": False, "kernel_initializer": ZEROS,
              "kernel_regularizer": None, "activity_regularizer": None, "kernel_constraint": None}
    return builder.add_layer("matmul", "Dense", config, [x], tuple(eqn.outvars[0].aval.shape), [kernel])


def _product_without_contraction(builder: Builder, eqn: Any, values: list, where: str) -> Pending:
    """An einsum that contracts nothing (RoFormer's ``einsum('bslh,...sh->bslh', x, cos_table)``) is an
    element-wise product with a known constant, whatever its axis order: kept as a function of the
    activation (a following transpose restores the batch-first order) and identified as ``a x + b``
    by ``constants.materialize_affine`` (Multiply by a constant tensor or one BatchNormalization)."""
    consts = [v for v in values if isinstance(v, Const)]
    others = [v for v in values if not isinstance(v, Const)]
    if len(consts) != 1 or not consts[0].known or len(others) != 1 or not isinstance(others[0], (Tensor, Pending)):
        raise unsupported("a product without contraction of activations and a parameter", where,
                          "multiply by the parameter with * instead")
    if isinstance(others[0], Pending) and not getattr(others[0], "array_constants", False):
        values = [builder.tensor(v, where) if v is others[0] else v for v in values]  # relu(x) * table: relu first
    parts = [as_function(v) for v in values]
    primitive, params, out = eqn.primitive, eqn.params, eqn.outvars[0].aval
    pending = Pending(root_of(others[0]), lambda r: primitive.bind(*[part(r) for part in parts], **params),
                      tuple(out.shape), np.dtype(out.dtype), where)
    pending.array_constants = True  # identified by constants.materialize_affine
    return pending


def _cases() -> tuple[Case, ...]:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    def split_heads(x: Any, heads: int) -> Any:
        return x.reshape((*x.shape[:2], heads, -1))

    class EinsumAttention(nn.Module):  # HuggingFace-style hand-written attention
        heads: int = 2
        causal: bool = False

        @nn.compact
        def __call__(self, x):
            q, k, v = (split_heads(nn.Dense(8)(x), self.heads) for _ in range(3))
            scores = jnp.einsum("...qhd,...khd->...hqk", q / math.sqrt(q.shape[-1]), k)
            if self.causal:  # a constant bias, as HF GPT-2 adds it
                mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
                scores = scores + jax.lax.select(mask > 0, jnp.zeros(mask.shape), jnp.full(mask.shape, -1e9))
            weights = jax.nn.softmax(scores, axis=-1)
            out = jnp.einsum("...hqk,...khd->...qhd", weights, v)
            return nn.Dense(3)(out.reshape((*out.shape[:2], -1)))

    def padding_bias(tokens: Any) -> Any:  # HuggingFace BERT's additive mask, from token ids (0 = padding)
        mask = jnp.expand_dims(tokens, axis=(-3, -2))
        return jax.lax.select(mask > 0, jnp.full(mask.shape, 0.0), jnp.full(mask.shape, jnp.finfo(jnp.float32).min))

    class PaddedEinsum(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            x = nn.Embed(7, 6)(tokens)
            q, k, v = (split_heads(nn.Dense(6)(x), 2) for _ in range(3))
            weights = nn.attention.dot_product_attention_weights(q, k, bias=padding_bias(tokens))
            return jnp.einsum("...hqk,...khd->...qhd", weights, v).reshape(x.shape)

    class NnxPaddedEinsum(nnx.Module):
        def __init__(self):
            self.embed = nnx.Embed(7, 4, rngs=nnx.Rngs(0))

        def __call__(self, tokens):
            x = split_heads(self.embed(tokens), 2)
            scores = jnp.einsum("bqhd,bkhd->bhqk", x, x) + padding_bias(tokens)
            return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), x).reshape((*tokens.shape, 4))

    class MatmulPair(nn.Module):  # x @ y^T of two projections, no heads
        @nn.compact
        def __call__(self, x):
            return nn.Dense(5)(x) @ jnp.swapaxes(nn.Dense(5)(x), 1, 2)

    class NnxEinsum(nnx.Module):
        def __init__(self):
            rngs = nnx.Rngs(0)
            self.q, self.k, self.v = (nnx.Linear(4, 6, rngs=rngs) for _ in range(3))

        def __call__(self, x):
            q, k, v = (split_heads(f(x), 3) for f in (self.q, self.k, self.v))
            weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k), axis=-1)
            return jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape((x.shape[0], x.shape[1], -1))

    class TiedHead(nn.Module):  # GPT-2's LM head: the token embedding's transpose
        @nn.compact
        def __call__(self, tokens):
            embed = nn.Embed(9, 4)
            return embed.attend(nn.Dense(4)(embed(tokens)))

    class NnxTiedHead(nnx.Module):
        def __init__(self):
            self.embed = nnx.Embed(9, 4, rngs=nnx.Rngs(0))

        def __call__(self, tokens):
            return self.embed.attend(jax.nn.relu(self.embed(tokens)))

    class RotaryTable(nn.Module):  # transformers' FlaxRoFormer: einsum("bslh,...sh->bslh", x, cos_table)
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4)(x).reshape((x.shape[0], x.shape[1], 2, 2))
            table = jnp.cos(jnp.arange(x.shape[1] * 2, dtype=jnp.float32).reshape(x.shape[1], 2))
            return nn.Dense(3)(jnp.einsum("bslh,...sh->bslh", h, table).reshape(x.shape[0], x.shape[1], 4))

    return (
        Case("linen-einsum-without-contraction-constant-table", RotaryTable, (3, 2)),
        Case("linen-tied-embedding-head", TiedHead, (5,), input_dtype="int32", input_range=(0, 9)),
        Case("nnx-tied-embedding-head", NnxTiedHead, (5,), input_dtype="int32", input_range=(0, 9)),
        Case("linen-einsum-attention", EinsumAttention, (5, 4)),
        Case("linen-einsum-attention-padding-bias", PaddedEinsum, (5,), input_dtype="int32", input_range=(0, 7)),
        Case("nnx-einsum-attention-padding-bias", NnxPaddedEinsum, (6,), input_dtype="int32", input_range=(0, 7)),
        Case("linen-einsum-attention-causal-bias", lambda: EinsumAttention(2, True), (4, 3)),
        Case("linen-matmul-of-activations", MatmulPair, (3, 4)),
        Case("nnx-einsum-attention", NnxEinsum, (5, 4)),
    )


CASES = _cases
