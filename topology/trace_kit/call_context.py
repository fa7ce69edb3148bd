"""The layer call being recorded, passed by the tracer to the layer kind that reads it.

A kind's ``read_attrs(module, context)`` gets the module and a :class:`CallContext`:
layers built from submodules (attention's query/key/value/out, an RNN's cell)
need their submodules' variables and the call's keyword arguments (``mask=``,
``reverse=True``). The recorder (``topology/trace/capture.py``) builds one for
each marked call; nothing reads stack frames' variables.
"""
from __future__ import annotations

import sysconfig
import traceback
from dataclasses import dataclass
from typing import Callable

from topology.trace_kit.errors import unsupported
from topology.vocabulary.tensors import TensorRef, TreePath

_INTERNAL = ("/flax/", "/jax/", "/jaxlib/", "/topology/", "/writer/")


@dataclass
class CallContext:
    """What the tracer knows about the layer call being recorded.

    Example:
        >>> CallContext({}, ("Block_0", "attn"), lambda path: {}).where
        'Block_0/attn'
    """

    kwargs: dict  # keyword arguments of the call (e.g. mask=..., reverse=True)
    path: TreePath  # the module's path
    lookup: Callable[[TreePath], dict[tuple[str, str], TensorRef]]  # module path -> its variables
    line: str = ""  # the user's file:line that called the layer, when found
    module_name: str = ""  # the module's class name, for a module at the root (empty path)

    @property
    def where(self) -> str:
        return "/".join(self.path) or self.module_name

    def variables(self, *sub: str) -> dict[tuple[str, str], TensorRef]:
        """The variables of the submodule at ``sub`` below this module, keyed (collection, name)."""
        return self.lookup((*self.path, *sub))

    def unsupported(self, what: str, hint: str, layer: str = "") -> Exception:
        """UNSUPPORTED_OPERATION naming ``what``, the layer and the user's line."""
        return unsupported(f"{what} in layer {layer or self.where}", self.line, hint)


def user_line() -> str:
    """The innermost caller outside flax, jax, this package and the standard library, as file:line.

    Example:
        >>> user_line().split(":")[0].endswith((".py", ">")) or user_line() == ""
        True
    """
    stdlib = sysconfig.get_paths()["stdlib"]
    for frame, line in traceback.walk_stack(None):
        name = frame.f_code.co_filename
        if not name.startswith(("<", stdlib)) and not any(part in name for part in _INTERNAL):
            return f"{name}:{line}"
    return ""
