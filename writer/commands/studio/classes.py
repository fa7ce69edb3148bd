"""The classes a model file defines, read with :mod:`ast` (the file is parsed, never run).

The studio lists them when the user picks a ``.py`` file, and names them in the
``BAD_MODULE_SPEC`` error of a spec without a class (``train_mnist.py:``). Classes whose bases
look like Flax modules (``nn.Module``, ``linen.Module``, ``Module``, or another module class of
the same file) come first; the others follow, since a base may be imported under any name.

Example:
    >>> module_classes("import flax.linen as nn\\nclass Helper: pass\\nclass CNN(nn.Module): pass\\n")
    ['CNN', 'Helper']
"""
from __future__ import annotations

import ast
from pathlib import Path

from topology.vocabulary.errors import ConversionError


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Subscript):  # Generic[T] and the like
        return _base_name(node.value)
    return ""


def module_classes(source: str) -> list[str]:
    """Top-level class names of ``source``: Flax-module-like ones first, each group in file order.

    Raises ``BAD_MODULE_SPEC`` when the text is not valid Python.

    Example:
        >>> module_classes("class A(Module): pass\\nclass B(A): pass\\nclass C: pass")
        ['A', 'B', 'C']
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        raise ConversionError("BAD_MODULE_SPEC", f"the model file is not valid Python{f' (line {line})' if line else ''}",
                              "fix the file, or pick another .py file") from None
    modules: list[str] = []
    others: list[str] = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {_base_name(b) for b in node.bases}
        (modules if "Module" in bases or bases & set(modules) else others).append(node.name)
    return modules + others


def file_classes(path: Path) -> list[str]:
    """:func:`module_classes` of the file at ``path`` (UTF-8, undecodable bytes replaced).

    Example:
        >>> import tempfile; f = Path(tempfile.mkdtemp()) / "m.py"; _ = f.write_text("class M: pass")
        >>> file_classes(f)
        ['M']
    """
    return module_classes(path.read_text(encoding="utf-8", errors="replace"))
