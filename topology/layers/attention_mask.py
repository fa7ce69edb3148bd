"""Attention masks -> exact tfjs layers around each head's scores.

Flax masks attention scores with ``where(mask, scores, finfo.min)`` before the
softmax. tfjs 4.22 has no ``where``; with ``M`` in {0, 1} the same values are::

    scores * M + (M - 1) * BIG          # kept scores unchanged, masked ones exactly -BIG

and softmax turns -BIG into exactly 0 as it does finfo.min (a fully masked row
becomes uniform in both). Two kinds of mask are understood, identified by value:

* a constant (``nn.make_causal_mask``, ``is_causal=True``, any fixed pattern):
  applied per head as one BatchNormalization on the flattened scores with
  gamma = M, beta = (M - 1) * BIG, mean 0, variance 1, epsilon 0 — which is
  exactly the line above;
* a padding mask from a (batch, length) model input ``m`` of non-negative
  values, 0 meaning padding: an ``attention_mask`` of 0/1 or the token ids
  themselves (``nn.make_attention_mask(m, m)``, ``make_attention_mask(t > 0, t > 0)``,
  key-only ``m[:, None, None, :]``),
  optionally combined with a constant: ``M`` is built once per attention
  layer from ``m`` (RepeatVector, Permute, Multiply, the constant as above)
  and applied per head with Multiply and Add.

Masks that differ between heads, or any other function of the inputs, are
refused with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from topology.graph import LayerNode, WeightBinding
from topology.layers.base import layer_base
from topology.layers.batchnorm import batch_norm_config
from topology.layers.views import reshape_node
from topology.trace_kit.builder import Builder
from topology.trace_kit.values import Const, Pending, Tensor

# Flax uses finfo.min; any value whose exp underflows below the row's real scores gives the same
# softmax. 3e4 stays finite (and exact) when the weights are stored as float16.
BIG = 30000.0


@dataclass(frozen=True)
class MaskPlan:
    """What a mask is: ``constant`` (q, k) of 0/1, and the input it depends on, if any.

    ``input_kind`` is ``"key"`` (M[b, i, j] = m[b, j]), ``"query"`` (m[b, i]) or
    ``"pair"`` (m[b, i] * m[b, j]); ``input_layer`` names the (batch, length) tensor.

    Example:
        >>> MaskPlan(np.ones((2, 2), np.float32)).input_kind is None
        True
    """

    constant: np.ndarray
    input_layer: str | None = None
    input_kind: str | None = None
    input_rank: int = 1  # rank of the input tensor without batch (a Reshape to (L,) first when > 1)


def plan_mask(value: Any, causal: bool, q_len: int, k_len: int, fail: Any) -> MaskPlan | None:
    """Identify the ``mask=`` value (a Const, Pending or Tensor of the tracer) and ``is_causal``.

    Example:
        >>> plan_mask(Const(np.tril(np.ones((1, 1, 2, 2)))), False, 2, 2, None).constant.tolist()
        [[1.0, 0.0], [1.0, 1.0]]
    """
    causal_part = np.tril(np.ones((q_len, k_len), np.float32)) if causal else np.ones((q_len, k_len), np.float32)
    if value is None:
        return MaskPlan(causal_part) if causal else None
    if isinstance(value, Const):
        if not value.known:
            raise fail("a mask computed from parameters", "masks may depend only on constants and model inputs")
        return MaskPlan(_constant(np.asarray(value.value), q_len, k_len, fail) * causal_part)
    if isinstance(value, Tensor):
        root, fn = value, (lambda r: r)
    elif isinstance(value, Pending):
        root, fn = value.root, value.fn
    else:
        raise fail(f"a mask of kind {type(value).__name__}", "pass a mask made from constants or one model input")
    length = int(np.prod(root.shape[1:]))
    if sorted(d for d in root.shape[1:] if d != 1) not in ([length],) or length not in (q_len, k_len):
        raise fail(f"a mask computed from a tensor of shape {root.shape[1:]}",
                   "build masks from one (batch, length) input of 0/1 values, e.g. nn.make_attention_mask(m, m)")
    batch = root.shape[0]

    def evaluate(flat: np.ndarray) -> np.ndarray:
        return _per_example(np.asarray(fn(flat.reshape(root.shape).astype(root.dtype))), batch, q_len, k_len, fail)

    constant = evaluate(np.ones((batch, length)))
    if not np.all(constant == constant[:1]):
        raise fail("a mask that differs between examples for an all-ones input", "use a padding mask of 0/1 values")
    constant = constant[0]
    rng = np.random.RandomState(0)
    # 0/1 masks and token ids alike (``tokens > 0``): the layers compute min(m, 1) of a non-negative m.
    probes = [rng.randint(0, 2, (batch, length)) for _ in range(6)] + [np.zeros((batch, length), int)]
    probes += [rng.choice([0, 1, 2, 7], (batch, length)) for _ in range(4)]
    for kind in ("key", "pair", "query"):
        if kind != "query" and length != k_len or kind == "query" and length != q_len:
            continue
        if all(np.array_equal(evaluate(p), _expected(kind, p, q_len, k_len) * constant) for p in probes):
            return MaskPlan(constant * causal_part, root.layer, kind, len(root.shape) - 1)
    raise fail("a mask that is not a padding mask of one (batch, length) input combined with a constant",
               "make it with nn.make_attention_mask(m, m) (and nn.make_causal_mask / nn.combine_masks)")


def _constant(mask: np.ndarray, q_len: int, k_len: int, fail: Any) -> np.ndarray:
    full = _per_example(mask, mask.shape[0] if mask.ndim == 4 else 1, q_len, k_len, fail)
    if not np.all(full == full[:1]):
        raise fail("a constant mask that differs between examples", "use the same mask for every example")
    return full[0]


def _per_example(mask: np.ndarray, batch: int, q_len: int, k_len: int, fail: Any) -> np.ndarray:
    """(batch, q, k) of 0/1 from a mask broadcastable to (batch, heads, q, k), the same for every head."""
    mask = np.asarray(mask)
    while mask.ndim < 4:
        mask = mask[None]
    try:
        mask = np.broadcast_to(mask, (batch, mask.shape[1], q_len, k_len))
    except ValueError:
        raise fail(f"a mask of shape {mask.shape}", f"masks broadcast to (batch, heads, {q_len}, {k_len})") from None
    if not np.all(mask == mask[:, :1]):
        raise fail("a mask that differs between heads", "use one mask for all heads (a heads axis of size 1)")
    return (mask[:, 0] != 0).astype(np.float32)


def _expected(kind: str, m: np.ndarray, q_len: int, k_len: int) -> np.ndarray:
    m = np.clip(m, 0, 1).astype(np.float32)
    if kind == "key":
        return np.broadcast_to(m[:, None, :], (m.shape[0], q_len, k_len))
    if kind == "query":
        return np.broadcast_to(m[:, :, None], (m.shape[0], q_len, k_len))
    return m[:, :, None] * m[:, None, :]


def mask_nodes(plan: MaskPlan, name: str, q_len: int, k_len: int, origin: str) -> tuple[list[LayerNode], tuple]:
    """Layers computing the input-dependent ``M`` and its bias once: (nodes, (mask, bias) layer names).

    Only for plans with an input; constant plans are applied per head by :func:`apply_mask`.
    """
    nodes: list[LayerNode] = []

    def add(suffix: str, class_name: str, config: dict, inputs: list[str], shape: tuple,
            weights: list[WeightBinding] | None = None) -> str:
        nodes.append(LayerNode(f"{name}.{suffix}", class_name, config, inputs, weights or [], shape, origin))
        return nodes[-1].name

    length = q_len if plan.input_kind == "query" else k_len
    source = plan.input_layer
    if plan.input_rank != 1:
        nodes.append(reshape_node(f"{name}.mask_flat", (length,), [source], origin))
        source = nodes[-1].name
    # Rescaling casts an int32 mask to float32 (and keeps a float one); ReLU(max 1) makes token ids 0/1.
    source = add("mask_float", "Rescaling", layer_base(scale=1.0, offset=0.0), [source], (length,))
    source = add("mask_01", "ReLU", layer_base(max_value=1.0, negative_slope=0.0, threshold=0.0), [source], (length,))
    parts = []
    if plan.input_kind in ("key", "pair"):
        parts.append(add("mask_keys", "RepeatVector", layer_base(n=q_len), [source], (q_len, k_len)))
    if plan.input_kind in ("query", "pair"):
        rows = add("mask_rows", "RepeatVector", layer_base(n=k_len), [source], (k_len, q_len))
        parts.append(add("mask_queries", "Permute", layer_base(dims=[2, 1]), [rows], (q_len, k_len)))
    mask = parts[0] if len(parts) == 1 else add("mask_pairs", "Multiply", layer_base(), parts, (q_len, k_len))
    if not np.all(plan.constant == 1):
        flat = add("mask_flat_pairs", "Reshape", layer_base(target_shape=[q_len * k_len]), [mask], (q_len * k_len,))
        scaled = _affine(f"{name}.mask_constant", flat, plan.constant.reshape(-1), np.zeros(q_len * k_len), origin)
        nodes.append(scaled)
        mask = add("mask", "Reshape", layer_base(target_shape=[q_len, k_len]), [scaled.name], (q_len, k_len))
    bias = add("mask_bias", "Rescaling", layer_base(scale=BIG, offset=-BIG), [mask], (q_len, k_len))
    return nodes, (mask, bias)


def apply_mask(plan: MaskPlan, shared: tuple | None, name: str, scores: str, q_len: int, k_len: int,
               origin: str) -> list[LayerNode]:
    """Layers masking one head's ``scores`` (q, k); the last node's output is the masked scores."""
    if plan.input_layer is not None:
        mask, bias = shared
        kept = LayerNode(f"{name}_kept", "Multiply", layer_base(), [scores, mask], [], (q_len, k_len), origin)
        return [kept, LayerNode(name, "Add", layer_base(), [kept.name, bias], [], (q_len, k_len), origin)]
    gamma = plan.constant.reshape(-1)
    return [
        reshape_node(f"{name}_flat", (q_len * k_len,), [scores], origin),
        _affine(f"{name}_flat_masked", f"{name}_flat", gamma, (gamma - 1) * BIG, origin),
        reshape_node(name, (q_len, k_len), [f"{name}_flat_masked"], origin),
    ]


def _affine(name: str, source: str, gamma: np.ndarray, beta: np.ndarray, origin: str) -> LayerNode:
    """x * gamma + beta exactly: BatchNormalization with mean 0, variance 1, epsilon 0."""
    size = int(gamma.size)
    weights = [
        WeightBinding("gamma", (size,), constant=np.asarray(gamma, np.float32)),
        WeightBinding("beta", (size,), constant=np.asarray(beta, np.float32)),
        WeightBinding("moving_mean", (size,), constant=np.zeros(size, np.float32)),
        WeightBinding("moving_variance", (size,), constant=np.ones(size, np.float32)),
    ]
    return LayerNode(name, "BatchNormalization", batch_norm_config(-1, epsilon=0.0, center=True, scale=True),
                     [source], weights, (size,), origin)


def padding_bias(builder: Builder, pending: Pending) -> Tensor | None:
    """A per-position function of a (batch, length) padding input, ``a * min(m, 1) + b``, as layers; else None.

    HuggingFace-style attention turns ``attention_mask`` into an additive bias
    ``lax.select(m > 0, 0, finfo.min)`` of shape (batch, 1, 1, length) outside any
    layer; the element-wise catalog cannot name a function that changes the shape.
    Found by value on 0/1 and token-id probes, it becomes Reshape, Rescaling (cast),
    ReLU(max 1) and Rescaling(a, b), which the score Add broadcasts.

    Example:
        >>> padding_bias(builder, pending)   # doctest: +SKIP
    """
    root = pending.root
    out = tuple(pending.shape)
    if len(root.shape) != 2 or len(out) < 2 or out[0] != root.shape[0] or \
            sorted(d for d in out[1:] if d != 1) != [root.shape[1]] or out[-1] != root.shape[1]:
        return None
    batch, length = root.shape

    def evaluate(m: np.ndarray) -> np.ndarray | None:
        try:
            y = np.asarray(pending.fn(m.astype(root.dtype)), dtype=np.float64)
        except Exception:  # noqa: BLE001 - not a function we can probe this way
            return None
        return y.reshape(batch, length) if y.size == batch * length else None

    y0, y1 = evaluate(np.zeros((batch, length))), evaluate(np.ones((batch, length)))
    if y0 is None or y1 is None or np.ptp(y0) or np.ptp(y1) or y0.flat[0] == y1.flat[0]:
        return None
    low, high = float(y0.flat[0]), float(y1.flat[0])
    rng = np.random.RandomState(0)
    for m in [rng.choice([0, 1, 2, 7], (batch, length)) for _ in range(6)]:
        y = evaluate(m)
        if y is None or not np.array_equal(y, low + (high - low) * np.clip(m, 0, 1)):
            return None
    x = root
    if out != tuple(root.shape):
        x = builder.add_layer("mask_shape", "Reshape", {"target_shape": list(out[1:])}, [x], out, dtype=root.dtype)
    x = builder.add_layer("mask_float", "Rescaling", {"scale": 1.0, "offset": 0.0}, [x], out)
    x = builder.add_layer("mask_01", "ReLU", {"max_value": 1.0, "negative_slope": 0.0, "threshold": 0.0}, [x], out)
    return builder.add_layer("mask_bias", "Rescaling", {"scale": high - low, "offset": low}, [x], out)
