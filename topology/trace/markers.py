"""Marker primitives that bracket one layer-module call in a jaxpr.

``enter`` wraps each array argument and ``exit`` the result; both are the
identity. Everything computed between them belongs to the layer and is
replaced by the layer's tfjs counterpart.
"""
from __future__ import annotations

from jax.extend.core import Primitive

enter_p = Primitive("flax2tfjs_enter")
exit_p = Primitive("flax2tfjs_exit")
variable_p = Primitive("flax2tfjs_variable")

for _marker in (enter_p, exit_p, variable_p):
    _marker.def_impl(lambda x, **params: x)
    _marker.def_abstract_eval(lambda aval, **params: aval)


def enter(x, call: int):
    """Mark ``x`` as an input of layer call ``call`` (identity)."""
    return enter_p.bind(x, call=call)


def exit_(x, call: int, output: int | None = None):
    """Mark ``x`` as the output of layer call ``call`` (identity); ``output`` numbers the
    leaves of a call that returns a tuple (an RNN's ``(carry, outputs)``)."""
    if output is None:
        return exit_p.bind(x, call=call)
    return exit_p.bind(x, call=call, output=output)


def variable(x, call: int, collection: str, name: str):
    """Mark ``x`` as the value of variable ``collection/name`` of layer call ``call`` (identity): a
    parameter the model computes (a tied head's ``embedding.T``, a weight-normed kernel), which the
    builder then computes from the checkpoint tensors it comes from."""
    return variable_p.bind(x, call=call, collection=collection, name=name)
