"""Flax ``nn.RNN`` / ``nnx.RNN`` over an LSTM or simple cell -> tfjs ``LSTM`` / ``SimpleRNN``.

Flax's ``LSTMCell`` keeps one Dense per gate: ``ii, if, ig, io`` on the input
(no bias) and ``hi, hf, hg, ho`` on the hidden state (with bias). Keras packs
them as ``kernel [in, 4u]``, ``recurrent_kernel [u, 4u]`` and ``bias [4u]`` in
the same gate order i, f, c(=g), o, so the weights are concatenated (lazily, at
write time). NNX's ``OptimizedLSTMCell`` already stores the packed form
(``dense_i``, ``dense_h``). ``SimpleCell`` maps to ``SimpleRNN`` (its
``residual=True`` adds the identity to the recurrent kernel).

Activations are written explicitly: tfjs' LSTM default recurrent activation is
``hard_sigmoid``, not Flax's ``sigmoid``. The initial carry must be zeros
(Flax's default), which is also what tfjs starts from.

``reverse=True`` is ``go_backwards=True`` (both return the outputs in
processing order); ``keep_order=True`` flips them back along time with a
fixed exchange-matrix Dense between two Permutes. ``nn.Bidirectional`` /
``nnx.Bidirectional`` (default concatenating merge) is traced as one layer: a
forward RNN, a backward one flipped back, and Concatenate. ``GRUCell`` does
not convert: Flax's GRU applies the reset gate after the recurrent matmul
(Keras ``reset_after=True``), which tfjs 4.22's GRU rejects.

``return_carry=True`` (the seq2seq encoder pattern) returns ``(carry, outputs)``:
the recurrent layer gets ``return_state=True`` and each carry leaf refers to one
of its extra outputs (:func:`_output_refs`), not with ``seq_lengths`` (Flax's
carry is then taken at each sequence's own length).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from topology.graph import LayerNode, WeightBinding, tensor_ref
from topology.layers.base import ZEROS, Case, LayerKind, layer_base
from topology.layers.views import permuted
from topology.trace_kit.call_context import CallContext
from topology.trace_kit.errors import unsupported
from topology.vocabulary.errors import ConversionError
from topology.vocabulary.tensors import TensorRef

# Keras activation names tfjs and tf-keras both know, with numpy references to identify a cell's functions.
KERAS_ACTIVATIONS: dict[str, Any] = {
    "linear": lambda x: x,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
    "softplus": lambda x: np.logaddexp(x, 0),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "swish": lambda x: x / (1 + np.exp(-x)),
}


def _activation_name(fn: Any, role: str, fail: Callable[..., Exception], layer: str) -> str:
    """The Keras name of ``fn`` (jax.nn.sigmoid, nn.tanh, a lambda ...), found by comparing values."""
    import jax
    import jax.numpy as jnp

    x = np.concatenate([np.linspace(-8, 8, 321), np.random.RandomState(0).normal(0, 3, 200)]).astype(np.float32)
    try:
        with jax.ensure_compile_time_eval():
            y = np.asarray(fn(jnp.asarray(x)), dtype=np.float64)
    except Exception:  # noqa: BLE001 - any failure means it is not a plain element-wise function
        y = None
    if y is not None and y.shape == x.shape:
        for name, reference in KERAS_ACTIVATIONS.items():
            with np.errstate(all="ignore"):
                if np.allclose(y, reference(x.astype(np.float64)), rtol=1e-5, atol=1e-6):
                    return name
    raise fail(f"the cell's {role}={getattr(fn, '__name__', fn)!r}",
               "use one of " + ", ".join(KERAS_ACTIVATIONS) + " (tfjs recurrent layers have no other)", layer)


def _zero_carry(cell: Any, fail: Callable[..., Exception], layer: str) -> None:
    """Raise unless the cell starts from zeros, as tfjs' LSTM/SimpleRNN do."""
    import jax

    carry_init = getattr(cell, "carry_init", None)
    if carry_init is None:  # NNX: None means zeros_init()
        return
    try:
        with jax.ensure_compile_time_eval():
            value = np.asarray(carry_init(jax.random.PRNGKey(0), (2, 3), np.float32))
    except Exception:  # noqa: BLE001
        value = None
    if value is None or np.any(value != 0):
        raise fail("a non-zero carry_init", "tfjs recurrent layers start from a zero state; use the default", layer)


def _cell_kind(cell: Any, fail: Callable[..., Exception], layer: str) -> tuple[str, str]:
    """(Keras class, parameter layout) for a Flax cell."""
    from flax import linen as nn
    from flax import nnx

    known = ((nnx.OptimizedLSTMCell, "LSTM", "packed"),
             (nn.LSTMCell, "LSTM", "gates"), (nn.OptimizedLSTMCell, "LSTM", "gates"),  # same parameter names
             (nnx.LSTMCell, "LSTM", "nnx-gates"),
             (nn.SimpleCell, "SimpleRNN", "simple"), (nnx.SimpleCell, "SimpleRNN", "simple"))
    for cls, keras_class, layout in known:
        if isinstance(cell, cls):
            if type(cell).__call__ is not cls.__call__:  # a subclass computing something else
                raise fail(f"{type(cell).__name__}.__call__ (a {cls.__name__} subclass)", f"use {cls.__name__}", layer)
            return keras_class, layout
    if isinstance(cell, (nn.GRUCell, nnx.GRUCell)):
        raise fail(
            type(cell).__name__,
            "Flax's GRU applies the reset gate after the recurrent matmul (Keras reset_after=True), which "
            "tfjs 4.22's GRU rejects ('GRUCell does not support reset_after'); use LSTMCell or SimpleCell", layer)
    raise fail(f"an RNN over {type(cell).__name__}", "supported cells: LSTMCell, OptimizedLSTMCell, SimpleCell",
               layer)


def _read_attrs(module: Any, context: CallContext) -> dict:
    fail = context.unsupported
    kwargs = context.kwargs

    def option(name: str) -> Any:  # a call keyword overrides the module attribute
        value = kwargs.get(name)
        return getattr(module, name, False) if value is None else value

    carry = bool(option("return_carry"))
    # Flax then returns the carry at each sequence's own length; tfjs' state is after the last step.
    # Refused when the LayersModel is emitted (_expand), not here: a GraphModel traces the same call.
    at_lengths = {"_carry_at_lengths": context.where + (f" at {context.line}" if context.line else "")} \
        if carry and kwargs.get("seq_lengths") is not None else {}
    attrs = _read_directions(module, context, option)
    return {**attrs, **at_lengths, "_multi_output": True, "_return_carry": True} if carry else attrs


def _read_directions(module: Any, context: Any, option: Callable[[str], Any]) -> dict:
    from flax import linen as nn
    from flax import nnx
    from flax.linen import recurrent as linen_recurrent
    from flax.nnx.nn import recurrent as nnx_recurrent

    fail, kwargs = context.unsupported, context.kwargs
    if option("time_major"):
        raise fail("time_major=True", "use batch-major inputs (batch, time, features)")
    if kwargs.get("initial_carry") is not None:
        raise fail("initial_carry=", "tfjs recurrent layers start from a zero state")
    if isinstance(module, nn.Bidirectional) and type(module).__call__ is not nn.Bidirectional.__call__:
        raise fail(f"{type(module).__name__}.__call__ (a Bidirectional subclass)", "use nn.Bidirectional")
    if isinstance(module, (nn.Bidirectional, nnx.Bidirectional)):
        if module.merge_fn not in (linen_recurrent._concatenate, nnx_recurrent._concatenate):
            raise fail("a custom merge_fn", "use the default (concatenation)")
        if kwargs.get("seq_lengths") is not None:
            raise fail("seq_lengths=", "pad sequences at the end and drop seq_lengths")
        # Bidirectional runs the forward RNN forward and the backward one reversed, outputs in input order.
        return {"_directions": [_direction(module.forward_rnn, context, "forward_rnn", False, False),
                                _direction(module.backward_rnn, context, "backward_rnn", True, True)]}
    reverse, keep_order = bool(option("reverse")), bool(option("keep_order"))
    if kwargs.get("seq_lengths") is not None and reverse:
        # Forward, the outputs do not depend on seq_lengths (Flax does not zero the padding);
        # backward, Flax flips each sequence within its own length.
        raise fail("seq_lengths= with reverse=True", "pad sequences at the end and drop seq_lengths, or run forward")
    return {"_directions": [_direction(module, context, None, reverse, keep_order)]}


def _direction(rnn: Any, context: Any, sub: str | None, reverse: bool, keep_order: bool) -> dict:
    """What one RNN (alone, or one direction of a Bidirectional) becomes."""
    from flax import linen as nn
    from flax import nnx

    fail = context.unsupported
    layer = "/".join(p for p in (context.where, sub) if p)
    own_call = isinstance(rnn, nn.RNN) and type(rnn).__call__ is not nn.RNN.__call__
    if not isinstance(rnn, (nn.RNN, nnx.RNN)) or own_call:
        raise fail(type(rnn).__name__, "use nn.RNN / nnx.RNN themselves", layer)
    cell = rnn.cell
    keras_class, layout = _cell_kind(cell, fail, layer)
    if getattr(cell, "residual", False) and layout != "simple":
        raise fail("residual=True in the cell", "use residual=False", layer)
    _zero_carry(cell, fail, layer)
    activation = _activation_name(cell.activation_fn, "activation_fn", fail, layer)
    gate = _activation_name(cell.gate_fn, "gate_fn", fail, layer) if keras_class == "LSTM" else None
    names = {"gates": ("ii", "if", "ig", "io", "hi", "hf", "hg", "ho"),
             "nnx-gates": ("ii", "if_", "ig", "io", "hi", "hf", "hg", "ho"),
             "packed": ("dense_i", "dense_h"),
             "simple": ("i", "h") if isinstance(cell, nn.Module) else ("dense_i", "dense_h")}[layout]
    prefix = (sub,) if sub else ()
    cell_path = _bound_path(cell, (*context.path, *prefix, "cell"))
    return {
        "class": keras_class, "layout": layout, "activation": activation, "recurrent_activation": gate,
        "residual": bool(getattr(cell, "residual", False)), "reverse": reverse, "keep_order": keep_order,
        "variables": {n: context.lookup((*cell_path, n)) for n in names}, "submodules": names,
        "cell_path": "/".join(cell_path),
    }


def _bound_path(cell: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    """Where the cell's variables live: a Linen cell made in the parent's compact method
    belongs to the parent (``LSTMCell_0`` next to ``RNN_0``), not to the RNN."""
    try:
        path = cell.path  # Linen: bound modules know their path; NNX cells are found by attribute
    except Exception:  # noqa: BLE001 - unbound or NNX
        return default
    return tuple(str(p) for p in path) if isinstance(path, tuple) else default


def _config(units: int, activation: str = "tanh", recurrent_activation: str | None = "sigmoid",
            go_backwards: bool = False, keras_class: str = "LSTM", return_state: bool = False) -> dict:
    config = layer_base(
        units=units, activation=activation, use_bias=True,
        kernel_initializer=ZEROS, recurrent_initializer=ZEROS, bias_initializer=ZEROS,
        kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None,
        kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
        dropout=0.0, recurrent_dropout=0.0,
        return_sequences=True, return_state=return_state, go_backwards=go_backwards, stateful=False, unroll=False,
        time_major=False,
    )
    if keras_class == "LSTM":
        config.update(recurrent_activation=recurrent_activation, unit_forget_bias=False, implementation=2)
    return config


def _packed(refs: list[TensorRef], name: str) -> TensorRef:
    """One lazy tensor concatenating ``refs`` along the last axis (e.g. four gate kernels)."""
    first = refs[0]
    shape = (*first.shape[:-1], sum(r.shape[-1] for r in refs))
    path = (*first.path[:-2], "+".join(r.path[-2] for r in refs), name)
    return TensorRef(path, shape, first.dtype, lambda: np.concatenate([r.load() for r in refs], axis=-1),
                     first.source)


def _weights(direction: dict) -> list[WeightBinding]:
    found = direction["variables"]

    def param(sub: str, name: str) -> TensorRef:
        ref = found.get(sub, {}).get(("params", name))
        if ref is None:
            raise KeyError("/".join(p for p in ("params", direction["cell_path"], sub, name) if p))
        return ref

    layout, subs = direction["layout"], direction["submodules"]
    if layout in ("gates", "nnx-gates"):
        kernel = _packed([param(s, "kernel") for s in subs[:4]], "kernel")
        recurrent = _packed([param(s, "kernel") for s in subs[4:]], "recurrent_kernel")
        bias = _packed([param(s, "bias") for s in subs[4:]], "bias")
    else:  # packed LSTM (dense_i, dense_h: the hidden one has the bias) or simple cell (the input one has it)
        biased = subs[1] if layout == "packed" else subs[0]
        kernel, recurrent, bias = param(subs[0], "kernel"), param(subs[1], "kernel"), param(biased, "bias")
    add_identity = (lambda k: k + np.eye(k.shape[0], dtype=k.dtype)) if direction["residual"] else None
    return [
        WeightBinding("kernel", tuple(kernel.shape), kernel),
        WeightBinding("recurrent_kernel", tuple(recurrent.shape), recurrent, add_identity),
        WeightBinding("bias", tuple(bias.shape), bias),
    ]


def _expand(kind: LayerKind, name: str, attrs: dict, inputs: list[str], variables: dict, origin: str,
            output_shape: Any) -> list[LayerNode]:
    shape = attrs["_input_shapes"][0]
    if len(inputs) != 1 or len(shape) != 3:
        raise unsupported(f"an RNN over inputs of shape {shape} in layer {origin}", "",
                           "only (batch, time, features) sequences convert")
    if attrs.get("_carry_at_lengths"):
        raise ConversionError(
            "RNN_CARRY_AT_LENGTHS",
            f"an RNN with return_carry=True and seq_lengths= in layer {attrs['_carry_at_lengths']}: Flax returns "
            "the carry at each sequence's own length, which TF.js recurrent layers cannot take from a length input",
            "convert with --format graph-model (or --format auto, which picks it for this model); or drop "
            "return_carry and take the outputs at each length")
    directions, state = attrs["_directions"], bool(attrs.get("_return_carry"))
    if len(directions) == 1:
        return _direction_nodes(directions[0], name, inputs, shape[1], origin, state)
    nodes, outputs, width = [], [], 0
    for direction, suffix in zip(directions, ("forward", "backward")):
        nodes += _direction_nodes(direction, f"{name}.{suffix}", inputs, shape[1], origin, state)
        outputs.append(nodes[-1].name)
        width += nodes[-1].output_shape[-1]
    nodes.append(LayerNode(name, "Concatenate", layer_base(axis=-1), outputs, [], (shape[1], width), origin))
    return nodes


def _direction_nodes(direction: dict, name: str, inputs: list[str], steps: int, origin: str,
                     return_state: bool = False) -> list[LayerNode]:
    weights = _weights(direction)
    units = weights[1].shape[0]
    keras_class = direction["class"]
    config = _config(units, direction["activation"], direction["recurrent_activation"], direction["reverse"],
                     keras_class, return_state)
    flip = direction["reverse"] and direction["keep_order"]
    rnn_name = _rnn_name(direction, name)
    nodes = [LayerNode(rnn_name, keras_class, config, list(inputs), weights, (steps, units), origin)]
    if flip:  # reverse the time axis back: Permute, Dense with the exchange matrix, Permute
        exchange = np.eye(steps, dtype=np.float32)[::-1].copy()
        dense = layer_base(units=steps, activation="linear", use_bias=False, kernel_initializer=ZEROS,
                           kernel_regularizer=None, activity_regularizer=None, kernel_constraint=None)
        reverse_time = lambda source: [LayerNode(f"{name}.flip", "Dense", dense, [source],  # noqa: E731
                                                 [WeightBinding("kernel", (steps, steps), constant=exchange)],
                                                 (units, steps), origin)]
        nodes += permuted(name, [rnn_name], [2, 1], (steps, units), origin, reverse_time, f"{name}.time_last")
    return nodes


def _rnn_name(direction: dict, name: str) -> str:
    """The recurrent layer of one direction: ``name`` itself unless a time flip follows it."""
    flip = direction["reverse"] and direction["keep_order"]
    return f"{name}.{direction['class'].lower()}" if flip else name


def _output_refs(name: str, attrs: dict) -> list[str]:
    """The tensors of ``(carry, outputs)`` leaf by leaf (return_carry=True).

    Flax's LSTM carry is ``(c, h)``; tfjs' LSTM with ``return_state`` returns
    ``[output, h, c]`` (SimpleRNN: ``[output, h]``, and Flax's carry is ``h``).
    A Bidirectional's carry is ``(forward carry, backward carry)``; reversed
    RNNs end, in both, after the first time step.
    """
    directions = attrs["_directions"]
    names = [name] if len(directions) == 1 else [f"{name}.forward", f"{name}.backward"]
    refs = []
    for direction, direction_name in zip(directions, names):
        rnn = _rnn_name(direction, direction_name)
        refs += [tensor_ref(rnn, 2), tensor_ref(rnn, 1)] if direction["class"] == "LSTM" else [tensor_ref(rnn, 1)]
    return [*refs, name]


def _cases() -> tuple[Case, ...]:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class LastStep(nn.Module):  # LSTM -> last step -> Dense
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.RNN(nn.LSTMCell(5))(x)[:, -1])

    class NnxRnn(nnx.Module):
        # rngs=False and a fresh stream per call: an rng stream kept in the state is no weight, and
        # the test harness turns its counter into a read-only numpy array.
        def __init__(self, cell: Any, **kwargs: Any):
            self.rnn = nnx.RNN(cell, rngs=False, **kwargs)

        def __call__(self, x):
            return self.rnn(x, rngs=nnx.Rngs(0))

    class NnxBidirectional(nnx.Module):
        def __init__(self):
            rngs = nnx.Rngs(0)
            self.rnn = nnx.Bidirectional(nnx.RNN(nnx.LSTMCell(2, 3, rngs=rngs), rngs=False),
                                         nnx.RNN(nnx.OptimizedLSTMCell(2, 3, rngs=rngs), rngs=False), rngs=False)

        def __call__(self, x):
            return self.rnn(x, rngs=nnx.Rngs(0))

    class LengthsPooled(nn.Module):  # sst2-style: tokens and a per-example length (a scalar input)
        @nn.compact
        def __call__(self, tokens, lengths):
            x = nn.Embed(7, 3)(tokens)
            y = nn.RNN(nn.LSTMCell(4))(x, seq_lengths=lengths)
            mask = jnp.arange(tokens.shape[1]) < lengths[:, None]
            return nn.Dense(2)(jnp.sum(y * mask[..., None], axis=1))

    class NnxLengthsMasked(nnx.Module):
        def __init__(self):
            self.embed = nnx.Embed(7, 3, rngs=nnx.Rngs(0))
            self.rnn = nnx.RNN(nnx.LSTMCell(3, 4, rngs=nnx.Rngs(1)), rngs=False)

        def __call__(self, tokens, lengths):
            mask = (jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]).astype(jnp.float32)
            return self.rnn(self.embed(tokens), seq_lengths=lengths, rngs=nnx.Rngs(0)) * mask[:, :, None]

    class CarryHead(nn.Module):  # the flax seq2seq encoder: the final carry (c, h) feeds a head
        reverse: bool = False

        @nn.compact
        def __call__(self, x):
            (c, h), y = nn.RNN(nn.LSTMCell(5), return_carry=True, reverse=self.reverse, keep_order=True)(x)
            return nn.Dense(3)(jnp.concatenate([c, nn.relu(h), y[:, 0]], axis=-1))

    class HiddenHead(nn.Module):  # Dense on h only
        @nn.compact
        def __call__(self, x):
            (_, h), _ = nn.RNN(nn.OptimizedLSTMCell(4))(x, return_carry=True)  # a call keyword
            return nn.Dense(2)(h)

    class SimpleCarry(nn.Module):  # SimpleCell's carry is h alone
        @nn.compact
        def __call__(self, x):
            h, _ = nn.RNN(nn.SimpleCell(4), return_carry=True)(x)
            return nn.Dense(2)(h)

    class BidirectionalCarry(nn.Module):
        @nn.compact
        def __call__(self, x):
            ((cf, hf), (cb, hb)), y = nn.Bidirectional(nn.RNN(nn.LSTMCell(3)), nn.RNN(nn.LSTMCell(4)),
                                                       return_carry=True)(x)
            return nn.Dense(2)(jnp.concatenate([hf, cb, cf * hb[:, :3], y[:, -1]], axis=-1))

    class NnxCarryHead(nnx.Module):
        def __init__(self, cell_class: Any = nnx.LSTMCell):
            self.rnn = nnx.RNN(cell_class(3, 4, rngs=nnx.Rngs(0)), return_carry=True, rngs=False)
            self.head = nnx.Linear(8, 2, rngs=nnx.Rngs(1))

        def __call__(self, x):
            (c, h), _ = self.rnn(x, rngs=nnx.Rngs(0))
            return self.head(jnp.concatenate([c, h], axis=-1))

    class CarryLeaf(nn.Module):
        leaf: int

        @nn.compact
        def __call__(self, x):
            return nn.RNN(nn.LSTMCell(4), return_carry=True)(x)[0][self.leaf]

    class NnxCarryLeaf(nnx.Module):
        def __init__(self, leaf: int):
            self.leaf = leaf
            self.rnn = nnx.RNN(nnx.LSTMCell(2, 4, rngs=nnx.Rngs(0)), return_carry=True, rngs=False)

        def __call__(self, x):
            return self.rnn(x, rngs=nnx.Rngs(0))[0][self.leaf]

    rngs = lambda: nnx.Rngs(0)  # noqa: E731
    ints = dict(input_dtype="int32", input_range=(0, 7))
    return (
        Case("linen-lstm-seq-lengths-length-mask", LengthsPooled, [(6,), ()], **ints),
        Case("nnx-lstm-seq-lengths-length-mask", NnxLengthsMasked, [(5,), ()], **ints),
        Case("linen-lstm", lambda: nn.RNN(nn.LSTMCell(4)), (6, 3)),
        Case("linen-lstm-last-step-dense", LastStep, (5, 2)),
        Case("linen-optimized-lstm", lambda: nn.RNN(nn.OptimizedLSTMCell(4)), (6, 3)),
        Case("linen-lstm-reverse", lambda: nn.RNN(nn.LSTMCell(3), reverse=True), (5, 2)),
        Case("linen-lstm-reverse-keep-order", lambda: nn.RNN(nn.LSTMCell(3), reverse=True, keep_order=True), (5, 2)),
        Case("linen-bidirectional-lstm", lambda: nn.Bidirectional(nn.RNN(nn.LSTMCell(3)), nn.RNN(nn.LSTMCell(4))),
             (5, 2)),
        Case("linen-lstm-relu-activation", lambda: nn.RNN(nn.LSTMCell(
            3, gate_fn=jax.nn.sigmoid, activation_fn=nn.relu)), (4, 2), input_range=(-1.0, 1.0)),
        Case("linen-simple-rnn", lambda: nn.RNN(nn.SimpleCell(4)), (6, 3)),
        Case("linen-simple-rnn-residual", lambda: nn.RNN(nn.SimpleCell(3, residual=True)), (5, 3)),
        Case("nnx-lstm", lambda: NnxRnn(nnx.LSTMCell(3, 4, rngs=rngs())), (6, 3)),
        Case("nnx-optimized-lstm", lambda: NnxRnn(nnx.OptimizedLSTMCell(3, 4, rngs=rngs())), (6, 3)),
        Case("nnx-simple-rnn", lambda: NnxRnn(nnx.SimpleCell(3, 4, rngs=rngs())), (6, 3)),
        Case("nnx-lstm-reverse", lambda: NnxRnn(nnx.LSTMCell(2, 3, rngs=rngs()), reverse=True), (5, 2)),
        Case("nnx-bidirectional-lstm", NnxBidirectional, (5, 2)),
        Case("linen-lstm-return-carry-dense", CarryHead, (6, 3)),
        Case("linen-lstm-return-carry-reverse", lambda: CarryHead(reverse=True), (6, 3)),
        Case("linen-optimized-lstm-return-carry-h", HiddenHead, (5, 2)),
        Case("linen-simple-rnn-return-carry", SimpleCarry, (5, 2)),
        Case("linen-bidirectional-return-carry", BidirectionalCarry, (5, 2)),
        Case("nnx-lstm-return-carry-dense", NnxCarryHead, (5, 3)),
        # The carry as the model output: output_layers name the LSTM's output 1 (h) or 2 (c).
        Case("linen-lstm-return-carry-h-output", lambda: CarryLeaf(1), (5, 2)),
        Case("nnx-lstm-return-carry-c-output", lambda: NnxCarryLeaf(0), (5, 2)),
        Case("nnx-optimized-lstm-return-carry", lambda: NnxCarryHead(nnx.OptimizedLSTMCell), (5, 3)),
    )


KIND = LayerKind(
    key="rnn",
    keras_class="LSTM",  # or SimpleRNN; built by _expand
    flax_modules=("nn.RNN", "nnx.RNN", "nn.Bidirectional", "nnx.Bidirectional"),
    make_config=_config,
    summary="nn.RNN / nnx.RNN over LSTMCell, OptimizedLSTMCell (-> LSTM, gate kernels packed i,f,c,o) or "
            "SimpleCell (-> SimpleRNN); reverse/keep_order (so nn.Bidirectional), zero initial carry; "
            "return_carry=True (carry (c, h) = the LSTM's return_state outputs h, c); "
            "not GRUCell (tfjs 4.22 has no reset_after GRU)",
    flax_classes=("flax.linen:RNN", "flax.nnx:RNN", "flax.linen:Bidirectional", "flax.nnx:Bidirectional"),
    read_attrs=_read_attrs,
    expand=_expand,
    output_refs=_output_refs,
    # seq_lengths= does not change the outputs when the RNN runs forward (_read_attrs refuses it reversed).
    side_keywords=("seq_lengths",),
    cases=_cases,
)
