"""Write ``docs/supported-layers.md`` from the layer registry and the op families.

Everything in the page comes from the code: each layer kind's Flax modules and
summary, the activation catalog (each function's tfjs layers are found by
running its emitter), and every declared test case traced into its tfjs layers
(shapes only: no weights are read or written). The cases are the ones
``tests/test_layer_matrix.py`` runs in real TF.js against JAX. Only the list of
what does not convert is written by hand (:func:`not_converted`), and each of
its examples is checked to fail with UNSUPPORTED_OPERATION.

Run from the repository root::

    python scripts/gen_supported_layers.py            # rewrite docs/supported-layers.md
    python scripts/gen_supported_layers.py --check    # exit 1 when the file is stale

Example:
    >>> text = render()                                  # doctest: +SKIP
    >>> text.splitlines()[0]                             # doctest: +SKIP
    '# Supported layers and operations'
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "docs" / "supported-layers.md"

def not_converted() -> tuple[tuple[str, str, Any], ...]:
    """What does not convert: (construct, why, example Case or None).

    Each example is traced when the page is rendered and must stop with
    UNSUPPORTED_OPERATION, so the list cannot go on claiming something that
    has become supported.

    Example:
        >>> construct, why, example = not_converted()[0]   # doctest: +SKIP
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from topology.layers.base import Case

    class After(nn.Module):  # fn(layer(x)): the construct sits between layers
        fn: Any
        conv: bool = False

        @nn.compact
        def __call__(self, x):
            return self.fn(nn.Conv(4, (3, 3))(x) if self.conv else nn.Dense(4)(x))

    class FreeParam(nn.Module):
        @nn.compact
        def __call__(self, x):
            return self.param("scale", nn.initializers.ones, (4,)) / nn.Dense(4)(x)

    class CarryWithLengths(nn.Module):
        @nn.compact
        def __call__(self, x):
            lengths = jnp.full((x.shape[0],), 3, jnp.int32)
            (_, h), _ = nn.RNN(nn.LSTMCell(3), return_carry=True)(x, seq_lengths=lengths)
            return h

    class HeadMask(nn.Module):  # head 0 causal, head 1 not
        @nn.compact
        def __call__(self, x):
            mask = jnp.stack([jnp.tril(jnp.ones((3, 3))), jnp.ones((3, 3))])[None]
            return nn.MultiHeadDotProductAttention(2)(x, mask=jnp.broadcast_to(mask, (x.shape[0], 2, 3, 3)))

    class CumsumIds(nn.Module):
        @nn.compact
        def __call__(self, ids):
            return nn.Embed(10, 4)(jnp.cumsum(ids, axis=1) % 10)

    class ScanBody(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            y = nn.Dense(3)(x)
            return y, y

    class ScanYs(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.scan(ScanBody, variable_axes={"params": 0}, split_rngs={"params": True}, length=2)()(x, None)[1]

    def dense(fn: Any) -> Case:
        return Case("example", lambda: After(fn), (3,))

    def conv(fn: Any) -> Case:
        return Case("example", lambda: After(fn, True), (6, 6, 2))

    def square(x: Any) -> Any:  # (batch, 4) -> (batch, 2, 2)
        return x.reshape((x.shape[0], 2, 2))

    return (
        ("gathers with index arrays (`jnp.take(x, idx)`, `x[:, jnp.array([2, 0])]`) outside `nn.Embed`",
         "no tfjs layer gathers; static slices and `jnp.split` do convert (see slicing above)",
         dense(lambda x: jnp.take(x, jnp.array([2, 0]), axis=-1))),
        ("a remainder or integer division of activations (`jnp.cumsum(ids) % 10`)",
         "no tfjs layer computes it; an integer cumsum and `ids != c` / `ids == c` do convert (RoBERTa's position "
         "ids, see structural above)",
         Case("example", CumsumIds, (5,), input_dtype="int32", input_range=(0, 10))),
        ("`jnp.sort`, `jax.lax.top_k`", "no tfjs layer computes them", dense(lambda x: jnp.sort(x, axis=-1))),
        ("`jnp.argmax` / `jnp.argmin`", "no tfjs layer computes them", dense(lambda x: jnp.argmax(x, axis=-1))),
        ("products of two activations that contract no axis or several axes, or keep several free axes "
         "per operand (`jnp.einsum('bi,bj->bij', x, y)`)",
         "tfjs' Dot multiplies rank-3 tensors over one axis; products with one contracted axis per head convert "
         "(see dot above)",
         dense(lambda x: jnp.einsum("bi,bj->bij", x, x))),
        ("`nn.scan` returning per-step activations (`ys`), or scanning over activations",
         "steps are unrolled into layers; only the carry flows between them",
         Case("example", ScanYs, (3,))),
        ("`flax.linen.recurrent.flip_sequences` (a per-example reversal by length)",
         "it gathers with indices computed from the lengths; tfjs has no gather layer. Pad at the end and use "
         "nn.RNN(reverse=True) on full-length sequences, or nn.Bidirectional without seq_lengths", None),
        ("`nn.GRUCell` / `nnx.GRUCell`",
         "Flax's GRU applies the reset gate after the recurrent matmul (Keras reset_after=True), which tfjs 4.22's "
         "GRU rejects ('GRUCell does not support reset_after parameter set to true')",
         Case("example", lambda: nn.RNN(nn.GRUCell(3)), (4, 2))),
        ("a constant array or parameter divided by activations, or used in `jnp.where`/comparisons with them",
         "constants convert in +, -, *, / (by the constant), maximum, minimum and concatenate (see constants above)",
         Case("example", FreeParam, (3,))),
        ("element-wise operations on activations with no exact tfjs layer (`jnp.sin`, `jnp.exp`, `jnp.sqrt` "
         "outside a recognised normalisation, division by activations), outside a catalogued function",
         "tfjs has no such layer; +, -, *, / by a number, maximum/minimum, tanh, sigmoid and integer powers compile "
         "(see expression above)", dense(jnp.sin)),
        ("log_softmax over an axis other than the last", "tfjs' log_softmax activation uses the last axis "
         "(softmax over any axis converts: see norms above)",
         dense(lambda x: jax.nn.log_softmax(square(x), axis=1))),
        ("reductions over the channel axis", "tfjs pools over spatial axes only",
         conv(lambda x: jnp.mean(x, axis=-1))),
        ("reductions over only some of the spatial axes", "tfjs pools over all spatial axes at once",
         conv(lambda x: jnp.max(x, axis=1))),
        ("max pooling with explicit padding of values that may be negative (not after a ReLU)",
         "tfjs pads with zeros, which is exact only for inputs >= 0; after relu it converts (ZeroPadding2D)",
         conv(lambda x: nn.max_pool(x, (2, 2), padding=((1, 0), (1, 0))))),
        ("average pooling with explicit padding and `count_include_pad=False`",
         "tfjs pooling pads with SAME/VALID only",
         conv(lambda x: nn.avg_pool(x, (2, 2), padding=((1, 0), (1, 0)), count_include_pad=False))),
        ("convolutions with `input_dilation`", "tfjs convolutions have none; nn.ConvTranspose converts",
         Case("example", lambda: nn.Conv(2, (3, 3), input_dilation=2, padding=((1, 1), (1, 1))), (5, 5, 2))),
        ("convolutions and transposed convolutions with CIRCULAR or REFLECT padding", "tfjs pads with zeros only",
         Case("example", lambda: nn.Conv(2, (3, 3), padding="CIRCULAR"), (5, 5, 2))),
        ("explicit padding in a 3-D convolution or transposed convolution", "tfjs has no ZeroPadding3D / Cropping3D",
         Case("example", lambda: nn.Conv(2, (2, 2, 2), padding=((1, 0), (1, 0), (1, 0))), (3, 3, 3, 2))),
        ("concatenation along the batch axis", "tfjs layers keep the batch axis apart",
         dense(lambda x: jnp.concatenate([x, x], axis=0))),
        ("reshapes and transposes that move the batch axis", "tfjs layers keep the batch axis first",
         dense(lambda x: x.T)),
        ("attention masks that differ between heads, or that are other functions of the inputs than a padding "
         "mask (0 = padding) combined with a constant mask",
         "each head's scores are masked by M, built from the constant and min(m, 1) of one (batch, length) input",
         Case("example", HeadMask, (3, 4))),
        ("layers that return tuples or dicts (other than an RNN's `(carry, outputs)`)",
         "a traced layer must return one array, or be a layer kind that maps each leaf to one of its tfjs "
         "layer's outputs (as nn.RNN(return_carry=True) does with the LSTM's return_state)", None),
        ("`nn.RNN(..., return_carry=True)` called with `seq_lengths=`",
         "Flax then returns the carry at each sequence's own last step; tfjs' state is the one after the "
         "last time step (error RNN_CARRY_AT_LENGTHS). `--format auto` or `graph-model` converts it; or pad at "
         "the end and drop seq_lengths, or use the outputs",
         Case("example", CarryWithLengths, (5, 2))),
    )


def _input_arrays(case: Any, batch: int = 1) -> list:
    import numpy as np

    shapes = _shapes(case)
    dtype = np.int32 if case.input_dtype == "int32" else np.float32
    return [np.zeros((batch, *shape), dtype) for shape in shapes]


def _shapes(case: Any) -> list[tuple[int, ...]]:
    shape = case.input_shape
    return [tuple(shape)] if all(isinstance(d, int) for d in shape) else [tuple(s) for s in shape]


def _classes_of(where: str, case: Any, kind: str | None) -> list[str]:
    """The tfjs classes the construct itself became: layer kind ``kind``'s own layers, or (None) the
    layers of the operations between layer modules, without the layers the case wraps it in."""
    try:
        layers = traced_layers(case)
    except Exception as exc:  # the page must not hide a case that does not convert
        raise SystemExit(f"{where}:{case.name} does not convert: {type(exc).__name__}: {exc}") from exc
    return [class_name for class_name, made_by in layers if made_by == (kind or "")]


def traced_layers(case: Any) -> list[tuple[str, str]]:
    """(tfjs class, layer kind that made it) for each layer of a case's model, in graph order.

    The kind is "" for the layers of operations between layer modules. Traced
    from shapes only: no weight is read.

    Example:
        >>> from topology.layers import kind
        >>> traced_layers(kind("dense").cases()[0])          # doctest: +SKIP
        [('Dense', 'dense')]
    """
    import jax
    import numpy as np

    from topology.graph import InputSpec
    from topology.trace import is_nnx_module
    from topology.trace.build import build_graph
    from topology.trace.capture import trace_linen, trace_nnx
    from topology.vocabulary.tensors import TensorRef

    module = case.build()
    inputs = [InputSpec(f"input_{i}", shape, case.input_dtype) for i, shape in enumerate(_shapes(case))]
    if is_nnx_module(module):
        trace = trace_nnx(module, inputs)
    else:
        abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0), *_input_arrays(case))
        flat: dict[str, dict] = {}
        for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
            keys = tuple(str(getattr(k, "key", k)) for k in path)
            flat.setdefault(keys[0], {})[keys[1:]] = TensorRef(keys, tuple(leaf.shape), np.dtype(leaf.dtype), None)
        trace = trace_linen(module, flat, inputs)
    graph = build_graph(trace)
    # A layer module's nodes carry its origin, "/".join(path) (or the kind's key at the top level).
    kinds = {"/".join(call.path) or call.kind.key: call.kind.key for call in trace.calls.values()}
    return [(layer.class_name, kinds.get(layer.origin, "")) for layer in graph.layers]


REFUSALS = ("UNSUPPORTED_OPERATION", "RNN_CARRY_AT_LENGTHS")  # the codes that refuse a construct as such


def _check_not_converted(construct: str, example: Any) -> None:
    from topology.vocabulary.errors import ConversionError

    try:
        traced_layers(example)
    except ConversionError as exc:
        if exc.code in REFUSALS:
            return
        raise SystemExit(f"the example of '{construct}' fails with {exc.code}, not one of {REFUSALS}") from exc
    raise SystemExit(f"'{construct}' converts now: remove it from not_converted() in {Path(__file__).name}")


class _Recorder:
    """A stand-in GraphBuilder that records the layers an activation emitter adds."""

    def __init__(self) -> None:
        self.layers: list[str] = []

    def add_layer(self, op: str, class_name: str, config: dict, inputs: list, shape: tuple, **_: Any) -> Any:
        from topology.trace_kit.values import Tensor

        detail = config.get("activation") or ("max " + str(config["max_value"]) if config.get("max_value") else "")
        self.layers.append(f"{class_name}({detail})" if detail else class_name)
        return Tensor(op, shape, None)


def _emitted(function: Any) -> str:
    import numpy as np

    from topology.trace_kit.values import Tensor

    recorder = _Recorder()
    function.emit(recorder, Tensor("x", (1, 4), np.dtype("float32")))
    return ", ".join(recorder.layers)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _case_rows(family: str, cases: Any) -> list[str]:
    rows = ["| test case | tfjs layers of the operation |", "|---|---|"]
    for case in cases:
        rows.append(f"| `{case.name}` | {', '.join(_classes_of(family, case, None)) or '(none: folded away)'} |")
    return rows


def render() -> str:
    """The whole page, as text."""
    from topology.layers import REGISTRY
    from topology.ops import families
    from topology.ops.catalog import CATALOG

    lines = [
        "# Supported layers and operations",
        "",
        "<!-- generated by scripts/gen_supported_layers.py from topology/layers and topology/ops; do not edit -->",
        "",
        "With the model code (`--module` / `module=`), the converter traces the Flax model (Linen or NNX)",
        "and maps each layer module and each operation between layers to TF.js layers that plain",
        "`@tensorflow/tfjs` 4.22 loads. Every test case listed here is converted and run in real TF.js",
        "(Node) against JAX by `tests/test_layer_matrix.py`, with batch 1 and 3, to 1e-5 relative.",
        "Anything else stops the conversion with `error[UNSUPPORTED_OPERATION]`, naming the",
        "operation and your file:line; no output is written.",
        "",
        "## Layer modules",
        "",
        "| kind | Flax modules | tfjs layers | what converts |",
        "|---|---|---|---|",
    ]
    traced: dict[str, list[tuple[Any, list[str]]]] = {}
    for key, kind in REGISTRY.items():
        cases = kind.cases()
        traced[key] = [(case, _classes_of(key, case, key)) for case in cases]
        if traced[key]:
            classes = _unique([c for _, found in traced[key] for c in found])
        else:
            classes = [kind.keras_class] if isinstance(kind.keras_class, str) else ["(chosen per use)"]
        if not kind.flax_classes:
            note = " (checkpoint-only conversion, without the model code)"
        else:
            note = ""
        modules = ", ".join(f"`{m}`" for m in kind.flax_modules)
        lines.append(f"| {key} | {modules} | {', '.join(classes)} | {kind.summary}{note} |")
    lines += [
        "",
        "## Activations and other element-wise functions",
        "",
        "Element-wise code between layers is identified by value, however it is spelled",
        "(`nn.relu`, `jax.nn.relu`, `jnp.maximum(x, 0)` and `jnp.where(x > 0, x, 0)` are all relu).",
        "",
        "| function | tfjs layers |",
        "|---|---|",
    ]
    lines += [f"| {function.name} | {_emitted(function)} |" for function in CATALOG]
    lines += [
        "| leaky_relu (any slope) | LeakyReLU (alpha = the slope, written explicitly) |",
        "| elu (alpha != 1) | Activation(elu), Rescaling, ReLU, Rescaling, ReLU, Add (tfjs' ELU rejects alpha != 1) |",
        "| a * x + b | Rescaling |",
        "",
    ]
    for family, module in families().items():
        cases = module.CASES()
        if not cases:
            continue
        summary = (module.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        lines += [f"## Operations: {family}", "", summary, ""] + _case_rows(family, cases) + [""]
    lines += ["## Layer modules: every tested case", ""]
    for key, rows in traced.items():
        if not rows:
            continue
        lines += [f"### {key}", "", "| test case | tfjs layers |", "|---|---|"]
        lines += [f"| `{case.name}` | {', '.join(classes)} |" for case, classes in rows]
        lines.append("")
    lines += [
        "## What does not convert",
        "",
        "Each stops the conversion with `error[UNSUPPORTED_OPERATION]`; the rows with an example are",
        "checked to do so every time this page is generated.",
        "",
        "| construct | why |",
        "|---|---|",
    ]
    for what, why, example in not_converted():
        if example is not None:
            _check_not_converted(what, example)
        lines.append(f"| {what} | {why} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the page; returns the exit status.

    Example:
        >>> main(["--check"])                                # doctest: +SKIP
        0
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/supported-layers.md is stale")
    args = parser.parse_args(argv)
    import os

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    text = render()
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python scripts/gen_supported_layers.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
