"""The layer call being recorded, handed by the tracer to the layer kind that reads it.

``read_attrs`` receives only the module; layers built from submodules
(attention's query/key/value/out, an RNN's cell) also need their submodules'
variables and the call's keyword arguments (``mask=``, ``reverse=True``). The
recorder (``topology/trace/capture.py``) builds a :class:`CallContext` for
each marked call and hands it on with :func:`recording` for the duration of
``read_attrs``; the kind asks for it with :func:`call_context`.
"""
from __future__ import annotations

import contextlib
import contextvars
import sysconfig
import traceback
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

from topology.trace.errors import unsupported
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


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("flax2tfjs_call", default=None)


@contextlib.contextmanager
def recording(context: CallContext) -> Iterator[CallContext]:
    """Hand ``context`` to :func:`call_context` while the layer kind reads the call.

    Example:
        >>> with recording(CallContext({"mask": None}, ("attn",), lambda path: {})):
        ...     call_context(object()).kwargs
        {'mask': None}
    """
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def call_context(module: Any) -> CallContext:
    """The call being traced, for a ``read_attrs`` that needs more than the module's fields.

    Outside a trace it raises RuntimeError: without the call's keywords a mask or a
    reverse=True could be missed, so guessing is not an option.

    Example:
        >>> def read_attrs(module):                         # doctest: +SKIP
        ...     context = call_context(module)
        ...     return {"_mask": context.kwargs.get("mask"), "_out": context.variables("out")}
        >>> call_context(object())
        Traceback (most recent call last):
        RuntimeError: call_context() is only available while topology.trace.capture records a layer call
    """
    context = _current.get()
    if context is None:
        raise RuntimeError("call_context() is only available while topology.trace.capture records a layer call")
    return replace(context, kwargs=dict(context.kwargs), line=user_line())


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
