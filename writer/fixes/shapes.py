"""Shape fixes: tensors stored in another framework's layout, repaired lazily and exactly.

* dense kernels stored ``(out, in)`` (PyTorch ``Linear.weight``) -> Flax ``(in, out)``;
* conv kernels stored ``(out, in, *spatial)`` (PyTorch OIHW) -> Flax ``(*spatial, in, out)``;
* vectors stored with extra size-1 axes (a bias of shape ``(1, n)``) -> ``(n,)``.

With a module the expected shapes are known (:func:`fit_shapes`); without one,
the template's chain logic decides (:func:`fit_chain`): kernels must chain
(each layer's outputs are the next one's inputs) and agree with their biases.

A square kernel fits either layout, so its shape cannot tell. It follows the
layout every other kernel of its kind (dense or conv) in the checkpoint was
found in; when those disagree it is an error listing the kernels, never a guess.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from topology.vocabulary.errors import ConversionError, Notices
from topology.vocabulary.misfit import Misfit
from writer.fixes.base import Fix, FixFamily, apply, listing
from writer.fixes.leaf import ExpectedLeaf
from topology.vocabulary.tensors import TensorRef, TreePath, path_str

SHAPES = FixFamily("shapes")
TRANSPOSED_KERNEL = SHAPES.fixed(
    "TRANSPOSED_KERNEL", "dense kernels stored (out, in), as PyTorch's Linear.weight, were transposed to "
    "Flax's (in, out)", "save kernel.T",
)
CONV_KERNEL_LAYOUT = SHAPES.fixed(
    "CONV_KERNEL_LAYOUT", "conv kernels stored (out, in, *spatial), PyTorch's OIHW, were transposed to "
    "Flax's (*spatial, in, out)", "save np.transpose(kernel, (2, 3, 1, 0)) for 2-D convolutions",
)
VECTOR_RESHAPED = SHAPES.fixed(
    "VECTOR_RESHAPED", "vectors stored with extra size-1 axes (a bias of shape (1, n)) were reshaped to (n,)",
    "save biases and scales as 1-D arrays",
)
INPUT_SHAPE_CORRECTED = SHAPES.fixed(
    "INPUT_SHAPE_CORRECTED", "an --input-shape that does not fit the parameters was replaced by the one they fix",
    "pass the input shape the model was trained on (without the batch axis)",
)

MAX_CHAIN_SOLUTIONS = 64
_LAYOUT_MESSAGES = (
    (TRANSPOSED_KERNEL, "dense kernels stored (out, in), transposed to (in, out)"),
    (CONV_KERNEL_LAYOUT, "conv kernels stored (out, in, *spatial), transposed to (*spatial, in, out)"),
    (VECTOR_RESHAPED, "vectors stored with extra size-1 axes, reshaped"),
)
_AUTO_NAME = re.compile(r"^(Conv|Dense)_(\d+)$")


@dataclass(frozen=True)
class Layout:
    """How a kernel may be stored: its shape and values in Flax layout from the stored ones.

    Example:
        >>> TORCH_DENSE.flax_shape((10, 784))
        (784, 10)
    """

    name: str  # "flax" | "torch"
    fix: Fix | None
    flax_shape: Callable[[tuple[int, ...]], tuple[int, ...]]
    to_flax: Callable[[np.ndarray], np.ndarray] | None


FLAX = Layout("flax", None, lambda s: tuple(s), None)
TORCH_DENSE = Layout("torch", TRANSPOSED_KERNEL, lambda s: tuple(s[::-1]), np.transpose)
TORCH_CONV = Layout("torch", CONV_KERNEL_LAYOUT, lambda s: (*s[2:], s[1], s[0]),
                    lambda k: np.transpose(k, (*range(2, k.ndim), 1, 0)))


def kernel_family(name: str, shape: tuple[int, ...]) -> str | None:
    """'dense' or 'conv' for kernels whose layout other frameworks change; None for other tensors.

    Example:
        >>> kernel_family("kernel", (3, 3, 1, 8)), kernel_family("bias", (8,))
        ('conv', None)
    """
    if name != "kernel":
        return None
    return "dense" if len(shape) == 2 else "conv" if len(shape) >= 3 else None


def layouts_for(leaf: ExpectedLeaf, ref: TensorRef) -> list[Layout]:
    """The layouts in which ``ref`` holds ``leaf`` (empty when none does).

    Example:
        >>> ref = TensorRef(("fc", "kernel"), (10, 784), np.dtype("float32"), None)
        >>> [l.name for l in layouts_for(ExpectedLeaf("params", ("Dense_0", "kernel"), (784, 10)), ref)]
        ['torch']
    """
    stored = tuple(ref.shape)
    found = [FLAX] if stored == leaf.shape else []
    family = kernel_family(leaf.name, leaf.shape)
    torch = TORCH_DENSE if family == "dense" else TORCH_CONV if family == "conv" else None
    if torch is not None and len(stored) == len(leaf.shape) and torch.flax_shape(stored) == leaf.shape:
        found.append(torch)
    if not found and _squeezed(stored) == _squeezed(leaf.shape) and math.prod(stored) == math.prod(leaf.shape) \
            and len(leaf.shape) == 1:
        found.append(Layout("vector", VECTOR_RESHAPED, lambda s, e=leaf.shape: e, None))
    return found


def compatible(leaf: ExpectedLeaf, ref: TensorRef) -> bool:
    """Whether ``ref`` can serve as ``leaf``, directly or after a shape fix.

    Example:
        >>> compatible(ExpectedLeaf("params", ("d", "bias"), (3,)), TensorRef(("b",), (1, 3), np.dtype("f4"), None))
        True
    """
    return bool(layouts_for(leaf, ref))


def fit_shapes(pairs: list[tuple[ExpectedLeaf, TensorRef]], source: str, notices: Notices,
               enabled: bool) -> list[TensorRef]:
    """Each checkpoint tensor in the shape the model expects; shape fixes are reported.

    Example:
        >>> leaf = ExpectedLeaf("params", ("Dense_0", "kernel"), (3, 2))
        >>> ref = TensorRef(("Dense_0", "kernel"), (2, 3), np.dtype("float32"), lambda: np.arange(6.).reshape(2, 3))
        >>> fixed = fit_shapes([(leaf, ref)], "ck", Notices(), True)[0]
        >>> fixed.shape, fixed.load()[0].tolist()
        ((3, 2), [0.0, 3.0])
    """
    options = [layouts_for(leaf, ref) for leaf, ref in pairs]
    # Name every tensor that does not fit (a wider layer shows in its kernel and its bias alike).
    misfits = [f"{path_str(ref.path)} has shape {tuple(ref.shape)} but the model's {leaf.where} needs {leaf.shape}"
               for (leaf, ref), found in zip(pairs, options) if not found]
    if misfits:
        more = f"; and {len(misfits) - 4} more" if len(misfits) > 4 else ""
        raise Misfit(
            "SHAPE_MISMATCH", f"{source}: " + "; ".join(misfits[:4]) + more,
            "check --input-shape, and that the checkpoint was saved from this model "
            "(same features and kernel sizes)",
        )
    chosen = _choose_layouts([(leaf, ref) for leaf, ref in pairs], options, source)
    return _apply_layouts(pairs, chosen, source, notices, enabled)


def _choose_layouts(pairs: list[tuple[ExpectedLeaf, TensorRef]], options: list[list[Layout]],
                    source: str) -> list[Layout]:
    chosen = [found[0] if len(found) == 1 else None for found in options]
    for family in ("dense", "conv"):
        members = [i for i, (leaf, _) in enumerate(pairs) if kernel_family(leaf.name, leaf.shape) == family]
        if not members:
            continue
        common = set.intersection(*({l.name for l in options[i]} for i in members))
        pick = "flax" if "flax" in common else "torch" if common == {"torch"} else None
        for i in members:
            if pick is not None:
                chosen[i] = next(l for l in options[i] if l.name == pick)
        undecided = [i for i in members if chosen[i] is None]
        if undecided:
            raise _ambiguous_layout([pairs[i][1] for i in undecided], [pairs[i][1] for i in members
                                                                      if chosen[i] is not None], source)
    return [c if c is not None else options[i][0] for i, c in enumerate(chosen)]


def _ambiguous_layout(square: list[TensorRef], others: list[TensorRef], source: str) -> ConversionError:
    return ConversionError(
        "AMBIGUOUS_LAYOUT",
        f"{source}: the square kernels {listing([f'{path_str(r.path)} {tuple(r.shape)}' for r in square])} fit "
        "both the Flax and the PyTorch layout, and the other kernels disagree on the layout "
        f"({listing([path_str(r.path) for r in others], 4)})",
        "save every kernel in one layout (Flax: (in, out) and (*spatial, in, out))",
    )


def _apply_layouts(pairs: list[tuple[ExpectedLeaf, TensorRef]], chosen: list[Layout], source: str,
                   notices: Notices, enabled: bool) -> list[TensorRef]:
    out = []
    applied: dict[Fix, list[str]] = {}  # by the fix declared, reported in the order of _LAYOUT_MESSAGES
    for (leaf, ref), layout in zip(pairs, chosen):
        if layout.fix is None:
            out.append(ref)
            continue
        applied.setdefault(layout.fix, []).append(f"{path_str(ref.path)} {tuple(ref.shape)} -> {leaf.shape}")
        out.append(reshaped(ref, leaf.shape, layout.to_flax))
    for fix, what in _LAYOUT_MESSAGES:
        if fix in applied:
            apply(fix, f"{source}: {what}: {listing(applied[fix], 6)}", notices, enabled)
    return out


def reshaped(ref: TensorRef, shape: tuple[int, ...], transform: Callable[[np.ndarray], np.ndarray] | None) -> TensorRef:
    """``ref`` seen in ``shape``: transformed (or reshaped) lazily when loaded.

    Example:
        >>> r = TensorRef(("b",), (1, 2), np.dtype("float32"), lambda: np.ones((1, 2), "float32"))
        >>> reshaped(r, (2,), None).load().shape
        (2,)
    """
    def load(ref=ref, transform=transform, shape=shape) -> np.ndarray:
        array = ref.load()
        return (transform(array) if transform is not None else array).reshape(shape)

    # A plain reshape keeps the flat order, so the streaming readers stay valid; a transform does not.
    streams = {} if transform is not None else {"slices": ref.slices, "extents": ref.extents}
    return TensorRef(ref.path, tuple(shape), ref.dtype, load, ref.source, ref.stored_dtype, **streams)


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


# --------------------------------------------------------------- without a module: the template chain


@dataclass(frozen=True)
class _ChainLayer:
    name: str
    kind: str  # "conv" | "dense"
    kernel: TensorRef
    bias: TensorRef | None

    def layouts(self) -> list[tuple[Layout, int, int]]:
        """(layout, fan_in, fan_out) for every layout this kernel could be stored in."""
        shape = tuple(self.kernel.shape)
        torch = TORCH_DENSE if self.kind == "dense" else TORCH_CONV
        found = []
        for layout in (FLAX, torch):
            flax_shape = layout.flax_shape(shape)
            if self.bias is None or math.prod(self.bias.shape) == flax_shape[-1]:
                found.append((layout, flax_shape[-2], flax_shape[-1]))
        return found


def fit_chain(params: dict[TreePath, TensorRef], source: str, notices: Notices,
              enabled: bool) -> dict[TreePath, TensorRef]:
    """Repair biases and kernel layouts of a flat Conv/Dense stack so the template can chain it.

    Only flat ``<layer>/kernel`` + ``<layer>/bias`` trees are considered (the
    template's domain); anything else is returned unchanged for the template
    to judge.

    Example:
        >>> f = lambda *p, shape: (p, TensorRef(p, shape, np.dtype("float32"), None))
        >>> params = dict([f("Dense_0", "kernel", shape=(5, 4)), f("Dense_0", "bias", shape=(5,)),
        ...                f("Dense_1", "kernel", shape=(2, 5)), f("Dense_1", "bias", shape=(2,))])
        >>> fixed = fit_chain(params, "ck", Notices(), True)
        >>> fixed[("Dense_0", "kernel")].shape, fixed[("Dense_1", "kernel")].shape
        ((4, 5), (5, 2))
    """
    if not params or any(len(path) != 2 or path[1] not in ("kernel", "bias") for path in params):
        return params
    params = _fit_biases(params, source, notices, enabled)
    layers = _chain_layers(params)
    if layers is None:
        return params
    solutions = _chain_solutions(layers)
    if not solutions:
        return params  # nothing chains: the template reports the mismatch
    flax_only = tuple(FLAX for _ in layers)
    if flax_only in solutions:
        return params
    uniform = [s for s in solutions if _uniform(layers, s)]
    if len(uniform) == 1:
        solution = uniform[0]
    elif len(solutions) == 1:
        solution = solutions[0]
    else:
        undecided = [layer.kernel for i, layer in enumerate(layers) if len({s[i].name for s in solutions}) > 1]
        decided = [layer.kernel for layer in layers if layer.kernel not in undecided]
        raise _ambiguous_layout(undecided, decided, source)
    pairs, chosen = [], []
    for layer, layout in zip(layers, solution):
        leaf = ExpectedLeaf("params", (layer.name, "kernel"), layout.flax_shape(tuple(layer.kernel.shape)))
        pairs.append((leaf, layer.kernel))
        chosen.append(layout)
    return _with_layouts(params, pairs, chosen, source, notices, enabled)


def _fit_biases(params: dict[TreePath, TensorRef], source: str, notices: Notices,
                enabled: bool) -> dict[TreePath, TensorRef]:
    pairs, chosen = [], []
    for path, ref in params.items():
        if path[1] == "bias" and len(ref.shape) > 1 and len(_squeezed(tuple(ref.shape))) <= 1:
            leaf = ExpectedLeaf("params", path, (math.prod(ref.shape),))
            pairs.append((leaf, ref))
            chosen.append(Layout("vector", VECTOR_RESHAPED, lambda s: s, None))
    if not pairs:
        return params
    return _with_layouts(params, pairs, chosen, source, notices, enabled)


def _with_layouts(params: dict[TreePath, TensorRef], pairs: list[tuple[ExpectedLeaf, TensorRef]],
                  chosen: list[Layout], source: str, notices: Notices, enabled: bool) -> dict[TreePath, TensorRef]:
    """``params`` with the tensors of ``pairs`` in their ``chosen`` layouts (reported by :func:`_apply_layouts`)."""
    out = dict(params)
    for (leaf, _), ref in zip(pairs, _apply_layouts(pairs, chosen, source, notices, enabled)):
        out[leaf.path] = ref
    return out


def _chain_layers(params: dict[TreePath, TensorRef]) -> list[_ChainLayer] | None:
    grouped: dict[str, dict[str, TensorRef]] = {}
    for path, ref in params.items():
        grouped.setdefault(path[0], {})[path[1]] = ref
    layers = []
    for name, leaves in grouped.items():
        kernel = leaves.get("kernel")
        if kernel is None or len(kernel.shape) not in (2, 3, 4, 5):
            return None
        layers.append(_ChainLayer(name, "dense" if len(kernel.shape) == 2 else "conv", kernel, leaves.get("bias")))
    matches = {layer.name: _AUTO_NAME.match(layer.name) for layer in layers}
    if all(matches.values()):  # the template's order: Conv_i, then Dense_j, by index
        layers.sort(key=lambda l: (matches[l.name].group(1) == "Dense", int(matches[l.name].group(2))))
    return layers


def _chain_solutions(layers: list[_ChainLayer]) -> list[tuple[Layout, ...]]:
    choices = [layer.layouts() for layer in layers]
    if not all(choices) or math.prod(len(c) for c in choices) > 4096:
        return []
    solutions = []
    for combo in itertools.product(*choices):
        if _chains(layers, combo):
            solutions.append(tuple(layout for layout, _, _ in combo))
            if len(solutions) >= MAX_CHAIN_SOLUTIONS:
                break
    return solutions


def _chains(layers: list[_ChainLayer], combo: tuple) -> bool:
    previous = None
    for layer, (_, fan_in, fan_out) in zip(layers, combo):
        if previous is not None:
            kind, out = previous
            if kind == layer.kind and fan_in != out:
                return False
            if kind == "conv" and layer.kind == "dense" and fan_in % out:
                return False
            if kind == "dense" and layer.kind == "conv":
                return False
        previous = (layer.kind, fan_out)
    return True


def _uniform(layers: list[_ChainLayer], solution: tuple[Layout, ...]) -> bool:
    for kind in ("dense", "conv"):
        if len({layout.name for layer, layout in zip(layers, solution) if layer.kind == kind}) > 1:
            return False
    return True
