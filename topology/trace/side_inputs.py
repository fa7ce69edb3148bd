"""Array keyword arguments of a layer call (e.g. attention's ``mask=``), marked for the builder.

A layer's positional arrays become its tfjs inputs (``markers.enter``). Some
layers also read an array through a keyword — an attention mask — that is not
a tensor flowing through the layer but a modifier of it. ``markers.side`` marks such
a value with the call and the keyword; the builder records what the value is
(a known constant, or a function of a model input) in the call's attributes
under ``_side`` so the layer kind can compose it exactly, and the layer's own
use of it stays inside the layer. A kind declares the keywords it composes
(``LayerKind.side_keywords``); other array keywords stay refused.
"""
from __future__ import annotations

from topology.trace_kit.markers import side


def mark_keywords(names: tuple[str, ...], kwargs: dict, call: int) -> dict:
    """``kwargs`` with the array keywords in ``names`` (the layer kind's ``side_keywords``) wrapped in
    :func:`side`.

    Example:
        >>> mark_keywords(("mask",), {"mask": None, "deterministic": True}, 1)
        {'mask': None, 'deterministic': True}
    """
    return {k: side(v, call, k) if k in names and hasattr(v, "shape") and hasattr(v, "dtype") else v
            for k, v in kwargs.items()}
