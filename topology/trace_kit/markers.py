"""Marker primitives that bracket one layer-module call in a jaxpr.

``enter`` wraps each array argument and ``exit`` the result; both are the
identity. Everything computed between them belongs to the layer and is
replaced by the layer's tfjs counterpart. ``variable`` marks a parameter the
model computes and passes to a layer, ``side`` an array keyword the layer kind
composes (``topology/trace/side_inputs.py``). The capture binds them; the
builder and the op handlers that walk bodies (``scan``) find them by name.
The primitives are made on first use, so importing this module needs no JAX.
"""
from __future__ import annotations

import functools
from typing import Any

ENTER = "flax2tfjs_enter"
EXIT = "flax2tfjs_exit"
VARIABLE = "flax2tfjs_variable"
SIDE = "flax2tfjs_side"


@functools.cache
def primitive(name: str) -> Any:
    """The identity primitive called ``name`` (one of the names above), made once.

    Example:
        >>> primitive(ENTER) is primitive(ENTER), primitive(ENTER).name
        (True, 'flax2tfjs_enter')
    """
    from jax.extend.core import Primitive

    marker = Primitive(name)
    marker.def_impl(lambda x, **params: x)
    marker.def_abstract_eval(lambda aval, **params: aval)
    return marker


def enter(x, call: int):
    """Mark ``x`` as an input of layer call ``call`` (identity)."""
    return primitive(ENTER).bind(x, call=call)


def exit_(x, call: int, output: int | None = None):
    """Mark ``x`` as the output of layer call ``call`` (identity); ``output`` numbers the
    leaves of a call that returns a tuple (an RNN's ``(carry, outputs)``)."""
    if output is None:
        return primitive(EXIT).bind(x, call=call)
    return primitive(EXIT).bind(x, call=call, output=output)


def variable(x, call: int, collection: str, name: str):
    """Mark ``x`` as the value of variable ``collection/name`` of layer call ``call`` (identity): a
    parameter the model computes (a tied head's ``embedding.T``, a weight-normed kernel), which the
    builder then computes from the checkpoint tensors it comes from."""
    return primitive(VARIABLE).bind(x, call=call, collection=collection, name=name)


def side(x, call: int, name: str):
    """Mark ``x`` as the ``name=`` keyword of layer call ``call`` (identity)."""
    return primitive(SIDE).bind(x, call=call, name=name)
