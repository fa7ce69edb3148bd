"""Per-token layers across a reshape that merges the batch and sequence axes (OPT's (B, S, H) -> (B*S, H)).

A TF.js layer keeps the batch axis apart, but a per-token layer (Dense, an activation, a
LayerNormalization over the last axis, ...) computes every position alone: applied to (B, S, H) it
gives exactly what it gives on (B*S, H), reshaped. So a reshape that folds leading axes into the
batch is an identity on the TF.js tensor, remembered here: the traced shape says (B*S, H), the
TF.js tensor is (B, S, H). Every layer on such a tensor must be per-token (else the conversion
stops: UNSUPPORTED_OPERATION naming it), and the reshape back to (B, S, ...) is the identity again.

Example:
    >>> tracker = MergedBatch()
    >>> tracker.lead["m"] = (6,)
    >>> node = LayerNode("d", "Dense", {"units": 4}, ["m"], output_shape=(4,))
    >>> tracker.follow(node, ""); node.output_shape, tracker.lead["d"]
    ((6, 4), (6,))
"""
from __future__ import annotations

from topology.graph import LayerNode, split_ref
from topology.trace_kit.errors import unsupported

# Layers that compute each position of the last axis' vectors alone (with an ``axis``: on the last one only).
PER_TOKEN = frozenset({"Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "Rescaling", "Dropout", "Add", "Multiply",
                       "Maximum", "Minimum", "LayerNormalization", "BatchNormalization", "Softmax"})


SPLIT = "split_batch"  # the op name of the layer that ends a merge (its output is not merged)


class MergedBatch:
    """Which layer outputs have leading axes folded into the batch axis by the trace, and which ones."""

    def __init__(self) -> None:
        self.lead: dict[str, tuple[int, ...]] = {}  # layer -> the axes after batch that the trace merged into it

    def follow(self, node: LayerNode, where: str) -> None:
        """Check ``node`` (just added) against its merged inputs; its output is merged like them."""
        merged = [self.lead.get(split_ref(ref)[0]) for ref in node.inputs]
        if not any(lead is not None for lead in merged) or node.name.startswith(SPLIT):
            return
        lead = next(lead for lead in merged if lead is not None)
        axis = node.config.get("axis", -1)
        last = len(node.output_shape or ())
        if (node.class_name not in PER_TOKEN or any(m != lead for m in merged)
                or axis not in (-1, last, [-1], [last])):
            raise unsupported(f"{node.class_name} layer {node.name} on activations whose batch axis merges other "
                              f"axes (a reshape to (batch * {', '.join(map(str, lead))}, ...))", where,
                              "between the reshape that merges the batch axis and the one that splits it, use "
                              "per-token layers only (Dense, activations, LayerNorm over the last axis)")
        if "axis" in node.config:
            node.config["axis"] = -1 if not isinstance(axis, list) else [-1]
        self.lead[node.name] = lead
        node.output_shape = (*lead, *(node.output_shape or ()))
