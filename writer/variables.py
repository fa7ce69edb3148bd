"""Find the model's variables inside whatever tree a checkpoint holds.

Checkpoints arrive as bare ``params`` trees, ``{'params': ..., 'batch_stats': ...}``
variable dicts, whole TrainStates (with optimizer moments shaped exactly like the
params, which must never be mistaken for them), old ``flax.optim`` states
(``target``), wrapped or flattened trees. This module strips those wrappers (with
the key fixes of :mod:`writer.fixes.keys`) and keeps only the collections a
model needs at inference.
"""
from __future__ import annotations

from topology.vocabulary.errors import ConversionError, Notices
from topology.vocabulary.tensors import Checkpoint, TensorRef, TreePath
from topology.vocabulary.variables import Variables
from writer.fixes.base import apply
from writer.fixes.keys import NESTED_PARAMS, normalise_paths, unwrap

INFERENCE_COLLECTIONS = ("params", "batch_stats")
# Top-level TrainState / flax.optim fields that are never model variables.
TRAINING_FIELDS = {"step", "opt_state", "tx", "apply_fn", "rng", "rngs", "dropout_rng", "optimizer", "state"}
# Keys a training script saves the model's own state under, beside optimizer state and a step (Flax's NNX
# examples save {"model": nnx.state(model), "optimizer": nnx.state(optimizer), "step": step}).
MODEL_STATE_KEYS = ("model", "state", "model_state", "net", "network")


def select_variables(checkpoint: Checkpoint, notices: Notices, fix: bool = True) -> Variables:
    """Strip wrappers and return the inference collections of ``checkpoint``.

    Key fixes (:mod:`writer.fixes.keys`) run first: NNX ``value`` leaves,
    ``.value`` suffixes and flat keys are undone, wrapper levels removed. With
    ``fix=False`` each of them is an error instead.

    Example:
        >>> import numpy as np; from pathlib import Path
        >>> t = TensorRef(("params", "Dense_0", "bias"), (2,), np.dtype("float32"), None)
        >>> ck = Checkpoint("npz", Path("m.npz"), {t.path: t})
        >>> list(select_variables(ck, Notices()).params)
        [('Dense_0', 'bias')]
    """
    source = checkpoint.path.name or str(checkpoint.path)
    tree = normalise_paths(dict(checkpoint.tensors), source, notices, fix)
    tree = unwrap(tree, source, notices, fix)
    return _select(tree, checkpoint, source, notices, fix)


def _select(tree: dict[TreePath, TensorRef], checkpoint: Checkpoint, source: str, notices: Notices, fix: bool,
            within: str = "") -> Variables:
    top = _top_keys(tree)
    if "params" not in top:
        training = top & TRAINING_FIELDS
        key = next((k for k in MODEL_STATE_KEYS if k in top and len(top) > 1), None) if not within else None
        if training and key is not None:
            others = ", ".join(f"'{k}'" for k in sorted(top - {key}))
            notices.assume("MODEL_STATE", f"{source}: the model state under '{key}' is converted; {others} "
                                          "beside it (optimizer state, step) is not")
            return _select(_subtree(tree, key), checkpoint, source, notices, fix, within=key)
        if training:
            nnx = "optimizer" in training and "opt_state" not in top  # nnx.Optimizer's state, not a TrainState
            raise ConversionError(
                "NO_PARAMS",
                f"{checkpoint.path} holds training state ({', '.join(sorted(training))}) but no 'params' "
                f"and no model state under {' or '.join(repr(k) for k in MODEL_STATE_KEYS[:2])}",
                "save nnx.state(model), or {'model': nnx.state(model), 'optimizer': ..., 'step': ...}" if nnx else
                "Linen: save the TrainState itself or {'params': state.params}; NNX: save nnx.state(model), "
                "or {'model': nnx.state(model), ...}",
            )
        notices.assume("BARE_PARAMS", "the checkpoint has no 'params' key; its whole tree is taken as the parameters")
        return Variables({"params": tree})
    collections = {name: _subtree(tree, name) for name in INFERENCE_COLLECTIONS if name in top}
    # {'params': {'params': ..., 'batch_stats': ...}}: a variables dict saved under 'params'.
    inner = _top_keys(collections["params"])
    if "params" in inner and inner <= set(INFERENCE_COLLECTIONS) | {"params"}:
        apply(NESTED_PARAMS, f"{source}: parameters nested as params/params/...: the extra level removed",
              notices, fix)
        nested = collections.pop("params")
        for name in INFERENCE_COLLECTIONS:
            if name in inner:
                collections[name] = _subtree(nested, name)
    for ignored in sorted(top - set(INFERENCE_COLLECTIONS)):
        if ignored in TRAINING_FIELDS:
            notices.assume("IGNORED_SUBTREE", f"'{ignored}' is training state and is not converted")
        else:
            notices.warn("IGNORED_SUBTREE", f"'{ignored}' is not a model collection and is not converted")
    return Variables(collections)


def _top_keys(tree: dict[TreePath, TensorRef]) -> set[str]:
    return {path[0] for path in tree if path}


def _subtree(tree: dict[TreePath, TensorRef], key: str) -> dict[TreePath, TensorRef]:
    return {path[1:]: ref for path, ref in tree.items() if path and path[0] == key}

