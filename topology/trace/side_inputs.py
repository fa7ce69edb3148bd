"""Array keyword arguments of a layer call (e.g. attention's ``mask=``), marked for the builder.

A layer's positional arrays become its tfjs inputs (``markers.enter``). Some
layers also read an array through a keyword — an attention mask — that is not
a tensor flowing through the layer but a modifier of it. ``side`` marks such
a value with the call and the keyword; the builder records what the value is
(a known constant, or a function of a model input) in the call's attributes
under ``_side`` so the layer kind can compose it exactly, and the layer's own
use of it stays inside the layer.
"""
from __future__ import annotations

from jax.extend.core import Primitive

side_p = Primitive("flax2tfjs_side")
side_p.def_impl(lambda x, *, call, name: x)
side_p.def_abstract_eval(lambda aval, *, call, name: aval)

# Layer kind key -> the call keywords it composes. Other array keywords stay refused.
# An RNN's seq_lengths= does not change its outputs when it runs forward (rnn.py refuses it reversed).
SIDE_KEYWORDS: dict[str, tuple[str, ...]] = {"attention": ("mask",), "rnn": ("seq_lengths",)}


def side(x, call: int, name: str):
    """Mark ``x`` as the ``name=`` keyword of layer call ``call`` (identity)."""
    return side_p.bind(x, call=call, name=name)


def mark_keywords(kind_key: str, kwargs: dict, call: int) -> dict:
    """``kwargs`` with the keywords ``kind_key`` composes wrapped in :func:`side`.

    Example:
        >>> mark_keywords("dense", {"mask": None}, 1)
        {'mask': None}
    """
    names = SIDE_KEYWORDS.get(kind_key, ())
    return {k: side(v, call, k) if k in names and hasattr(v, "shape") and hasattr(v, "dtype") else v
            for k, v in kwargs.items()}
