"""A model's variables by collection: what readers hand on and layer graphs bind."""
from __future__ import annotations

from dataclasses import dataclass, field

from topology.vocabulary.tensors import TensorRef, TreePath


@dataclass
class Variables:
    """Model variables by collection, each a flat ``{path inside collection: TensorRef}``.

    Example:
        >>> v = Variables({"params": {}})
        >>> v.get("batch_stats")
        {}
    """

    collections: dict[str, dict[TreePath, TensorRef]] = field(default_factory=dict)

    def get(self, collection: str) -> dict[TreePath, TensorRef]:
        return self.collections.get(collection, {})

    @property
    def params(self) -> dict[TreePath, TensorRef]:
        return self.get("params")
