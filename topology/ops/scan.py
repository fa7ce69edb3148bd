"""``nn.scan`` over layers (stacked parameters) -> the layers unrolled, one copy per step.

``nn.scan(Block, variable_axes={"params": 0}, length=N)`` traces ``Block`` once
into a ``scan`` whose body holds the marked layer calls; their variables in the
checkpoint are stacked along a new first axis of size N. Each step walks the
body again with the carry of the previous step, and every layer call inside
gets its variables (and the variable references in its attributes) sliced at
that step, so step i becomes its own layers with the weights ``stack[i]``.
``reverse=True`` walks the steps backwards. Per-step outputs (``ys``) that are
activations would need stacking along a new axis and are refused; scanned
inputs (``xs``) may only be constants or parameters. ``nn.remat`` /
``jax.checkpoint`` need nothing: their body is walked like any call.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from topology.layers.base import Case
from topology.ops import handles
from topology.trace_kit.builder import Builder
from topology.trace_kit.errors import unsupported
from topology.trace_kit.markers import ENTER, EXIT
from topology.trace_kit.values import Const, Inside, Pending, Tensor
from topology.vocabulary.tensors import TensorRef


def _calls_in(jaxpr: Any) -> set[int]:
    """Indices of the layer calls marked anywhere inside ``jaxpr`` (nested bodies included)."""
    found = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in (ENTER, EXIT):
            found.add(eqn.params["call"])
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                found |= _calls_in(inner)
    return found


def _slice_ref(ref: TensorRef, step: int, length: int) -> TensorRef:
    if not ref.shape or ref.shape[0] != length:
        return ref  # not stacked (e.g. a variable broadcast to every step)
    return TensorRef((*ref.path[:-1], f"{ref.path[-1]}[{step}]"), tuple(ref.shape[1:]), ref.dtype,
                     lambda: np.asarray(ref.load())[step], ref.source)


def _sliced(value: Any, step: int, length: int) -> Any:
    """``value`` with every TensorRef in it (dicts, lists, tuples) sliced at ``step``."""
    if isinstance(value, TensorRef):
        return _slice_ref(value, step, length)
    if isinstance(value, dict):
        return {k: _sliced(v, step, length) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_sliced(v, step, length) for v in value)
    return value


def _scanned_input(value: Any, step: int, where: str) -> Any:
    if isinstance(value, Const):
        if value.known:
            return Const(np.asarray(value.value)[step])
        return Const(None)  # a stacked parameter: the layer inside reads its own slice
    raise unsupported("nn.scan over an activation (xs that depend on the inputs)", where,
                      "scan over layers only: carry the activation, keep xs for stacked parameters")


@handles("scan")
def scan(builder: Builder, eqn: Any, values: list, where: str) -> list:
    params = eqn.params
    body, length = params["jaxpr"], int(params["length"])
    n_consts, n_carry = params["num_consts"], params["num_carry"]
    consts, carry, xs = values[:n_consts], values[n_consts:n_consts + n_carry], values[n_consts + n_carry:]
    calls = _calls_in(body.jaxpr)
    originals = {index: builder.trace.calls[index] for index in calls}
    ys_per_step = []
    steps = range(length - 1, -1, -1) if params.get("reverse") else range(length)
    try:
        for step in steps:
            for index, call in originals.items():  # this step's weights; fresh inputs for the call
                builder.trace.calls[index] = dataclasses.replace(
                    call, path=(*call.path[:-1], f"{call.path[-1]}_{step}") if call.path else call.path,
                    variables=_sliced(call.variables, step, length), attrs=_sliced(call.attrs, step, length))
                builder.call_inputs.pop(index, None)
            env = dict(zip(body.jaxpr.constvars, [Const(np.asarray(c)) for c in body.consts]))
            env.update(zip(body.jaxpr.invars, [*consts, *carry, *[_scanned_input(x, step, where) for x in xs]]))
            builder.walk(body.jaxpr, env, where)
            outs = [builder.read(env, var) for var in body.jaxpr.outvars]
            carry, ys = outs[:n_carry], outs[n_carry:]
            ys_per_step.append(ys)
    finally:
        builder.trace.calls.update(originals)
    stacked = []
    for index in range(len(eqn.outvars) - n_carry):
        parts = [ys[index] for ys in ys_per_step]
        if any(isinstance(p, (Tensor, Pending, Inside)) for p in parts):
            raise unsupported("nn.scan returning per-step activations (ys)", where,
                              "return only the carry from the scanned body: (x, None)")
        stacked.append(Const(np.stack([p.value for p in parts])) if all(p.known for p in parts) else Const(None))
    return [*carry, *stacked]


def _cases() -> tuple[Case, ...]:
    import flax.linen as nn

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            return x + nn.Dense(x.shape[-1])(nn.relu(nn.LayerNorm()(x))), None

    class Scanned(nn.Module):
        reverse: bool = False

        @nn.compact
        def __call__(self, x):
            stack = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3,
                            reverse=self.reverse)
            x, _ = stack()(nn.Dense(4)(x), None)
            return nn.Dense(2)(x)

    class Remat(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(2):
                x, _ = nn.remat(Block)()(x, None)
            return x

    class ScannedRemat(nn.Module):  # the lm1b/MaxText pattern: scan over remat-ed blocks
        @nn.compact
        def __call__(self, x):
            stack = nn.scan(nn.remat(Block), variable_axes={"params": 0}, split_rngs={"params": True}, length=2)
            return stack()(x, None)[0]

    from flax import nnx

    class NnxBlock(nnx.Module):
        def __init__(self, dim: int, rngs: Any, dropout: bool = False):
            self.norm = nnx.LayerNorm(dim, rngs=rngs)
            self.linear = nnx.Linear(dim, dim, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs) if dropout else None

        def __call__(self, x):
            y = self.linear(nnx.relu(self.norm(x)))
            return x + (self.drop(y) if self.drop is not None else y)

    class NnxScanned(nnx.Module):  # the NNX "scan over layers" pattern (toy example 06)
        def __init__(self, dim: int = 4, layers: int = 3, remat: bool = False, dropout: bool = False):
            @nnx.split_rngs(splits=layers)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def create(rngs):
                return NnxBlock(dim, rngs, dropout)

            self.blocks = create(nnx.Rngs(0, dropout=1))
            self.head = nnx.Linear(dim, 2, rngs=nnx.Rngs(1))
            self.remat = remat

        def __call__(self, x):
            def step(x, block):
                return (nnx.remat(lambda b, y: b(y))(block, x)) if self.remat else block(x)

            return self.head(nnx.scan(step, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(x, self.blocks))

    return (
        Case("nnx-scan-over-layers", NnxScanned, (4,)),
        Case("nnx-scan-of-remat-blocks", lambda: NnxScanned(remat=True), (4,)),
        Case("nnx-scan-blocks-with-dropout", lambda: NnxScanned(dropout=True), (4,)),
        Case("linen-scan-over-layers", Scanned, (5,)),
        Case("linen-scan-over-layers-reverse", lambda: Scanned(True), (5,)),
        Case("linen-remat-blocks", Remat, (3,)),
        Case("linen-scan-of-remat-blocks", ScannedRemat, (4,)),
    )


CASES = _cases
