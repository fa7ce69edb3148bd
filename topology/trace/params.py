"""Which checkpoint tensor each traced variable is, so that a parameter used outside a layer
(a learned position embedding, a cls token) can still be written as a constant.

``jax.make_jaxpr`` flattens the variables in pytree order; these helpers list the
:class:`TensorRef` of every leaf in that same order (None where none is known).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from topology.vocabulary.tensors import TensorRef, TreePath


def _keys(path: Any) -> TreePath:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def linen_refs(abstract: Any, variables: dict[str, dict[TreePath, TensorRef]]) -> list[TensorRef | None]:
    """The refs of ``abstract``'s leaves ({collection: nested dict}) in flattening order.

    Example:
        >>> ref = TensorRef(("params", "w"), (2,), np.dtype("float32"), None)
        >>> linen_refs({"params": {"w": 0}}, {"params": {("w",): ref}}) == [ref]
        True
    """
    import jax

    refs = []
    for path, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        keys = _keys(path)
        refs.append(variables.get(keys[0], {}).get(keys[1:]))
    return refs


def nnx_refs(state: Any, variables: dict[str, dict[TreePath, TensorRef]] | None) -> list[TensorRef | None]:
    """The refs of an ``nnx.State``'s leaves in flattening order: from the checkpoint when
    ``variables`` is given (matched by path), else the live arrays.

    Example:
        >>> nnx_refs(nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(0))), None)[0].shape   # doctest: +SKIP
        (3,)
    """
    import jax

    refs: list[TensorRef | None] = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        keys = _keys(path)
        if keys and keys[-1] == "value":
            keys = keys[:-1]
        if not hasattr(leaf, "shape") or jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            refs.append(None)
        elif variables is None:
            refs.append(TensorRef(("params", *keys), tuple(leaf.shape), np.dtype(leaf.dtype),
                                  lambda a=leaf: np.asarray(a), "live NNX module"))
        else:
            refs.append(next((tree[c] for tree in variables.values() for c in (keys, (*keys, "value")) if c in tree),
                             None))
    return refs
