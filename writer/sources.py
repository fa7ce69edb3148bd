"""Work out what ``to_tensorflowjs`` was given: a checkpoint path, a module, variables, a TrainState.

Every form ends as a :class:`Source`: an optional module to trace, the model's
variables as lazy tensors, and provenance for the metadata.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from topology.trace import is_nnx_module
from topology.trace.call_spec import CallSpec
from topology.vocabulary.errors import ConversionError, Notices
from topology.vocabulary.tensors import Checkpoint, TensorRef, TreePath
from topology.vocabulary.variables import Variables
from writer.module_loader import instantiate, load_module_spec
from writer.provenance import source_identity
from writer.readers import read_checkpoint
from writer.variables import select_variables


@dataclass
class Source:
    """A resolved conversion source."""

    name: str  # shown in reports and metadata (a file name, or "CNN (Linen module)")
    format: str  # checkpoint format, or "linen-module" / "nnx-module" / "train-state" / "variables"
    variables: Variables
    module: Any = None
    step: int | None = None
    path: Path | None = None
    digest: Callable[[], dict] = field(default=lambda: {"sha256": ""}, repr=False)  # the provenance source fields
    checkpoint: Checkpoint | None = field(default=None, repr=False)
    call: CallSpec = CallSpec()  # how the module is called (--call / --method)
    # The tensors as read, when the model's variables are still to be selected from them (by the fit
    # stage, :func:`writer.fit.fit`; ``resolve_source(..., select=False)``); None once selected.
    unselected: Checkpoint | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint.close()


def resolve_source(source: Any, module: Any, variables: Any, step: int | None, notices: Notices,
                   fix: bool = True, full_hash: bool = False, select: bool = True) -> Source:
    """Detect the kind of ``source`` and gather module and variables.

    ``full_hash`` names a checkpoint of any size by its full sha256 (see :mod:`writer.provenance`).
    ``fix`` turns the key fixes of :func:`writer.variables.select_variables` on (the default) or off.
    ``select=False`` leaves the selection of the variables (and its key fixes) to the fit stage: the
    tensors read wait in ``Source.unselected``.

    Example:
        >>> src = resolve_source("examples/mnist_ckpt", None, None, None, Notices())   # doctest: +SKIP
        >>> src.format                                                                  # doctest: +SKIP
        'orbax'
    """
    if isinstance(module, str):
        module = load_module_spec(module)
    elif module is not None:
        module = instantiate(module)
    if isinstance(source, (str, Path)):
        return _from_checkpoint(Path(source), module, step, notices, fix, full_hash, select)
    if variables is not None:
        if _is_linen_module(source) or _is_nnx_module(source):
            module = source
        return _from_tree(variables, module, "variables", notices, fix=fix, select=select)
    if _is_nnx_module(source):
        return Source(f"{type(source).__name__} (NNX module)", "nnx-module", Variables(), module=source,
                      digest=lambda: {"sha256": _digest_nnx(source)})
    if _is_linen_module(source):
        raise ConversionError("NO_VARIABLES", f"the Linen module {type(source).__name__} came without variables",
                              "pass variables=model.init(...) or a checkpoint path: to_tensorflowjs(module, out, variables=v)")
    if hasattr(source, "apply_fn") and hasattr(source, "params"):
        bound = getattr(source.apply_fn, "__self__", None)
        module = module or (bound if _is_linen_module(bound) else None)
        if module is None:
            raise ConversionError("MODULE_REQUIRED", "the TrainState's apply_fn is not a Linen module's apply",
                                  "pass module=YourModule() as well")
        tree = {"params": source.params}
        if getattr(source, "batch_stats", None) is not None:
            tree["batch_stats"] = source.batch_stats
        return _from_tree(tree, module, "TrainState", notices, fmt="train-state", step=_int_or_none(source.step),
                          fix=fix, select=select)
    if hasattr(source, "items"):  # a variables dict, FrozenDict or nnx.State, with module=
        return _from_tree(source, module, type(source).__name__, notices, fix=fix, select=select)
    raise ConversionError("UNKNOWN_SOURCE", f"cannot convert a {type(source).__name__}",
                          "pass a checkpoint path, a Linen module with variables=, an NNX module, or a TrainState")


def _from_checkpoint(path: Path, module: Any, step: int | None, notices: Notices, fix: bool = True,
                     full_hash: bool = False, select: bool = True) -> Source:
    checkpoint = read_checkpoint(path, step)
    # A full hash runs on the second core while the weights are converted (perf: bench/, issues 7 and 22).
    digest, cancel = source_identity(checkpoint.path, full_hash)
    checkpoint.closers.append(cancel)
    if not select:
        return Source(checkpoint.path.name, checkpoint.format, Variables(), module, checkpoint.step, checkpoint.path,
                      digest, checkpoint, unselected=checkpoint)
    try:
        variables = select_variables(checkpoint, notices, fix)
    except BaseException:
        checkpoint.close()
        raise
    return Source(checkpoint.path.name, checkpoint.format, variables, module, checkpoint.step, checkpoint.path,
                  digest, checkpoint)


def _from_tree(tree: Any, module: Any, name: str, notices: Notices, fmt: str = "variables",
               step: int | None = None, fix: bool = True, select: bool = True) -> Source:
    flat = flatten_arrays(tree)
    checkpoint = Checkpoint(fmt, Path(name), flat)
    deferred = not select and module is not None  # without a module, a selection error comes before MODULE_REQUIRED
    variables = Variables() if deferred else select_variables(checkpoint, notices, fix)
    if module is None:
        raise ConversionError("MODULE_REQUIRED", f"variables ({name}) were given without the module that uses them",
                              "pass module=YourModule() as well")
    label = f"{type(module).__name__} ({'NNX' if _is_nnx_module(module) else 'Linen'} module)"
    return Source(label, fmt, variables, module, step, digest=lambda: {"sha256": _digest_refs(flat)},
                  unselected=checkpoint if deferred else None)


def flatten_arrays(tree: Any, prefix: TreePath = ()) -> dict[TreePath, TensorRef]:
    """Flatten nested mappings (dict, FrozenDict, nnx.State) of arrays into lazy tensors.

    Leaves that are not numeric arrays (e.g. jax PRNG keys of NNX rng streams) are skipped.

    Example:
        >>> list(flatten_arrays({"params": {"w": np.zeros(2)}}))
        [('params', 'w')]
    """
    out: dict[TreePath, TensorRef] = {}
    items = tree.items() if hasattr(tree, "items") else ()
    for key, value in items:
        path = (*prefix, str(key))
        if hasattr(value, "get_value") and not hasattr(value, "items"):  # nnx.Variable
            value = value.get_value()
        elif hasattr(value, "value") and not hasattr(value, "shape") and not hasattr(value, "items"):
            value = value.value
        if hasattr(value, "items"):
            out.update(flatten_arrays(value, path))
        elif hasattr(value, "shape") and hasattr(value, "dtype"):
            array = value
            try:
                dtype = np.dtype(array.dtype)
            except TypeError:  # jax PRNG key arrays (key<fry>): random-number state, never a weight
                continue
            out[path] = TensorRef(path, tuple(array.shape), dtype, lambda a=array: np.asarray(a), "memory")
    return out


def _digest_refs(refs: dict[TreePath, TensorRef]) -> str:
    digest = hashlib.sha256()
    for path, ref in refs.items():
        digest.update("/".join(path).encode() + b"\0")
        digest.update(np.ascontiguousarray(ref.load()).tobytes())
    return digest.hexdigest()


def _digest_nnx(model: Any) -> str:
    from flax import nnx

    return _digest_refs(flatten_arrays(nnx.state(model)))


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _is_nnx_module(obj: Any) -> bool:
    return obj is not None and is_nnx_module(obj)


def _is_linen_module(obj: Any) -> bool:
    return obj is not None and any(c.__module__.startswith("flax.linen") and c.__name__ == "Module"
                                   for c in type(obj).__mro__)
