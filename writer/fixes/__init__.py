"""Automatic fixes: checkpoints that almost fit are repaired without guessing, and reported.

One module per fix family (:mod:`~writer.fixes.keys`, :mod:`~writer.fixes.shapes`,
:mod:`~writer.fixes.dtypes`); each fix is declared there with a stable code and
reported as ``fixed[CODE]``. The fit stage (:mod:`writer.fit`) applies them for a
conversion; ``fix=False`` (``--no-fix``) turns every repair into an
``error[FIX_DISABLED]`` that names it.

Example:
    >>> from writer.fixes import REGISTRY
    >>> REGISTRY["TRANSPOSED_KERNEL"].family
    'shapes'
"""
from writer.fixes import dtypes, keys, shapes  # noqa: F401  (registers every fix)
from writer.fixes.base import REGISTRY, Fix

__all__ = ["REGISTRY", "Fix"]
