"""Place a layer module that NNX copied inside a lifted transform (``nnx.scan``, ``nnx.remat``).

Inside ``nnx.scan(...)(x, self.blocks)`` the body receives a fresh module
graph holding one slice of the stacked variables, so the tracer cannot find
the layer by identity. Its place in the model is found by type and variable
shapes: the model module of the same type whose variables have the same
shapes, or the same shapes with one leading stacked axis (a module without weights, such as
``nnx.Dropout``, needs no place: it is named by its kind). The scan handler
(topology/ops/scan.py) then slices the stacked weights per step.
"""
from __future__ import annotations

from typing import Any, Iterable

from topology.vocabulary.errors import ConversionError
from topology.vocabulary.tensors import TreePath


def _shapes(module: Any) -> dict[str, tuple[int, ...]]:
    from flax import nnx

    found = {}
    for name, value in vars(module).items():
        if isinstance(value, nnx.Variable):
            array = value.get_value() if hasattr(value, "get_value") else value.value
            if hasattr(array, "shape"):
                found[name] = tuple(array.shape)
    return found


def place(module: Any, candidates: Iterable[tuple[TreePath, Any]]) -> TreePath:
    """The path of the model module ``module`` is a (possibly per-step) copy of.

    Example:
        >>> place(copy_inside_scan, _nnx_modules(model))   # doctest: +SKIP
        ('blocks', 'linear')
    """
    own = _shapes(module)
    if not own:  # no weights to find (nnx.Dropout: the identity at inference): any place will do
        return ()
    matches = []
    for path, node in candidates:
        if type(node) is not type(module):
            continue
        theirs = _shapes(node)
        if theirs.keys() == own.keys() and own and all(
                theirs[k] == own[k] or theirs[k][1:] == own[k] for k in own):
            matches.append(path)
    stacked = [p for p in matches if p]
    if len(stacked) == 1:
        return stacked[0]
    what = f"a {type(module).__name__} called inside a lifted transform (nnx.scan, nnx.vmap, nnx.remat)"
    reason = "no module of the model matches it" if not stacked else \
        f"it matches several modules ({', '.join('/'.join(p) for p in stacked)})"
    raise ConversionError("UNSUPPORTED_OPERATION", f"{what} cannot be placed in the model: {reason}",
                          "scan over a stack made with nnx.vmap of one module type per stack, "
                          "or call the layers in a Python loop")
