"""One variable a model expects (its collection, path and shape): what checkpoint tensors are matched to.

Its own module so that the key and shape fixes (and the select step that uses the key fixes) need
none of the model-running code in :mod:`writer.fixes.expected`.
"""
from __future__ import annotations

from dataclasses import dataclass

from topology.vocabulary.tensors import TreePath, path_str


@dataclass(frozen=True)
class ExpectedLeaf:
    """One variable the model needs.

    Example:
        >>> leaf = ExpectedLeaf("params", ("Dense_0", "kernel"), (784, 32))
        >>> leaf.name, leaf.layer, leaf.where
        ('kernel', ('Dense_0',), 'params/Dense_0/kernel')
    """

    collection: str
    path: TreePath  # inside the collection
    shape: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def layer(self) -> TreePath:
        return self.path[:-1]

    @property
    def where(self) -> str:
        return path_str((self.collection, *self.path))
