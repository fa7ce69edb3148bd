"""What an automatic fix is: a declared repair with a stable code, reported or refused.

Every fix is a :class:`Fix` registered in :data:`REGISTRY` (so the docs, the
report and the diagnostics corpus can list them). Code that detects a
fixable problem calls :func:`apply`: with fixes on (the default) it records
``fixed[CODE]: ...``; with ``--no-fix`` it raises ``error[FIX_DISABLED]``
naming the problem and the fix that would have repaired it. Fixes never guess:
when a problem has several possible repairs, the caller raises an error listing
the candidates instead of calling :func:`apply`.
"""
from __future__ import annotations

from dataclasses import dataclass

from topology.vocabulary.errors import ConversionError, Notices
from topology.vocabulary.tensors import TensorRef, TreePath

Tree = dict[TreePath, TensorRef]


@dataclass(frozen=True)
class Fix:
    """One kind of automatic repair.

    Example:
        >>> Fix("NESTED_PARAMS", "keys", "params/params/... -> params/...", "save {'params': params}").family
        'keys'
    """

    code: str  # reported as fixed[CODE]
    family: str  # "keys" | "shapes" | "dtypes"
    summary: str  # what it repairs, one line
    manual: str  # how the user would repair it by hand (the hint when fixes are off)


REGISTRY: dict[str, Fix] = {}


@dataclass(frozen=True)
class FixFamily:
    """Declares the fixes of one family and registers them in :data:`REGISTRY`.

    Example:
        >>> code = "DOC_EXAMPLE"
        >>> fix = FixFamily("keys").fixed(code, "an example", "nothing")
        >>> REGISTRY.pop(code) is fix
        True
    """

    name: str

    def fixed(self, code: str, summary: str, manual: str) -> Fix:
        """Declare the fix reported as ``fixed[code]``."""
        fix = Fix(code, self.name, summary, manual)
        REGISTRY[code] = fix
        return fix


def apply(fix: Fix, message: str, notices: Notices, enabled: bool) -> None:
    """Report that ``fix`` repaired what ``message`` says, or refuse when fixes are off.

    ``message`` says what was wrong and what it became, naming tensor paths.

    Example:
        >>> n = Notices(); f = Fix("TRANSPOSED_KERNEL", "shapes", "x", "transpose it yourself")
        >>> apply(f, "params/d/kernel (3, 2) transposed to (2, 3)", n, True)
        >>> n.items[0].render()
        'fixed[TRANSPOSED_KERNEL]: params/d/kernel (3, 2) transposed to (2, 3)'
        >>> apply(f, "params/d/kernel (3, 2) is transposed", n, False)
        Traceback (most recent call last):
        ...
        topology.vocabulary.errors.ConversionError: FIX_DISABLED: params/d/kernel (3, 2) is transposed -- not done: ...
    """
    if enabled:
        notices.fixed(fix.code, message)
        return
    raise ConversionError(
        "FIX_DISABLED", f"{message} -- not done: automatic fixes are off",
        f"drop --no-fix to have fixed[{fix.code}] repair it, or {fix.manual}",
    )


def rename_paths(tree: Tree, renamed: dict[TreePath, TreePath], fix: Fix, message: str, notices: Notices,
                 enabled: bool) -> Tree:
    """``tree`` with its paths renamed as ``renamed`` says, reported as ``fix`` (see :func:`apply`).

    Unchanged (and nothing reported) when the renaming would give two tensors one path, or a tensor
    no path: such a tree is not what the fix repairs.

    Example:
        >>> import numpy as np
        >>> t = {("d", "kernel.value"): TensorRef(("d", "kernel.value"), (2,), np.dtype("float32"), None)}
        >>> f = Fix("VALUE_SUFFIX", "keys", "x", "rename it yourself")
        >>> list(rename_paths(t, {("d", "kernel.value"): ("d", "kernel")}, f, "'.value' dropped", Notices(), True))
        [('d', 'kernel')]
        >>> list(rename_paths(t, {("d", "kernel.value"): ()}, f, "emptied", Notices(), True))
        [('d', 'kernel.value')]
    """
    if len(set(renamed.values())) != len(renamed) or not all(renamed.values()):
        return tree
    apply(fix, message, notices, enabled)
    return {renamed[path]: ref.with_path(renamed[path]) for path, ref in tree.items()}


def listing(items: list[str], limit: int = 8) -> str:
    """A short comma-separated list for messages: the first ``limit`` items and a count of the rest.

    Example:
        >>> listing(["a", "b", "c"], limit=2)
        'a, b and 1 more'
    """
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
