"""Load the user's model code from ``path/to/model.py:Name`` or ``package.module:Name``.

This imports (runs) the user's file, which is exactly what the user asked for
by naming it; checkpoints themselves are never executed.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Iterator

from topology.vocabulary.errors import ConversionError
from writer.extras import require_jax
from writer.regular_files import require_regular_file


def load_module_spec(spec: str) -> Any:
    """Import ``spec`` and return a ready module instance.

    A Linen class is instantiated with no arguments, an NNX class with
    ``rngs=nnx.Rngs(0)`` (or none), a function is called with no arguments.

    Example:
        >>> load_module_spec("examples/train_mnist.py:CNN")   # doctest: +SKIP
        CNN()
    """
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ConversionError("BAD_MODULE_SPEC", f"--module {spec!r} is not FILE.py:NAME or package.module:NAME",
                              "write e.g. --module models/cnn.py:CNN")

    require_jax(f"--module {spec} (tracing a Flax module)")
    namespace = _import(target, spec)
    obj = namespace
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ConversionError("MODULE_NOT_FOUND", f"{target} has no attribute {name!r}",
                                  f"names defined there: {', '.join(n for n in dir(namespace) if not n.startswith('_'))[:300]}")
        obj = getattr(obj, part)
    return instantiate(obj, spec)


def _import(target: str, spec: str) -> Any:
    if target.endswith(".py") or "/" in target or Path(target).suffix == ".py":
        path = Path(target)
        if not path.exists():
            raise ConversionError("MODULE_NOT_FOUND", f"no Python file at {path}", "check the path in --module")

        require_regular_file(path, "--module")
        if path.suffix != ".py":
            raise ConversionError("MODULE_NOT_PYTHON", f"--module {path} is not a Python file (.py)",
                                  "point --module at the .py file that defines the model, e.g. models/cnn.py:CNN")
        module_name = f"flax2tfjs_user_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.path.insert(0, str(path.resolve().parent))
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            raise ConversionError("MODULE_IMPORT_FAILED", f"importing {path} failed: {type(exc).__name__}: {exc}",
                                  "run the file with python to see the full error") from exc
        finally:
            sys.path.remove(str(path.resolve().parent))
        return module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise ConversionError("MODULE_NOT_FOUND", f"cannot import {target} ({exc})",
                              "check the module name, or give a file path like models/cnn.py:CNN") from exc


def instantiate(obj: Any, spec: str = "") -> Any:
    """A module instance from a class, factory or instance.

    Example:
        >>> import flax.linen as nn
        >>> type(instantiate(nn.Dense)).__name__                   # doctest: +SKIP
    """
    if not callable(obj) or _is_module_instance(obj):
        return obj
    if inspect.isclass(obj) and _is_nnx_class(obj):
        from flax import nnx

        attempts = [lambda: obj(rngs=nnx.Rngs(0)), lambda: obj()]
    else:
        attempts = [lambda: obj()]
    errors = []
    for attempt in attempts:
        try:
            return attempt()
        except TypeError as exc:
            errors.append(str(exc))
    raise ConversionError("MODULE_NOT_BUILDABLE", f"{spec or obj!r} cannot be built without arguments ({errors[-1]})",
                          "give defaults to its fields, or point --module at a zero-argument factory function")


def _is_nnx_class(cls: type) -> bool:
    return any(c.__module__.startswith("flax.nnx") and c.__name__ == "Module" for c in cls.__mro__)


def _is_module_instance(obj: Any) -> bool:
    return any(c.__name__ == "Module" and c.__module__.startswith("flax.") for c in type(obj).__mro__) \
        and not inspect.isclass(obj)


# Set by the CLI's SIGINT/SIGTERM handlers (writer/cli.py): a KeyboardInterrupt without a signal came
# from the model's own code. None: no handler is installed (the Python API), so none can be told apart.
_signal_seen: bool | None = None


def watch_interrupt_signals() -> None:
    """Note that SIGINT/SIGTERM handlers record their signals (see :func:`user_code`).

    Example:
        >>> watch_interrupt_signals()      # doctest: +SKIP
    """
    global _signal_seen
    _signal_seen = False


def note_interrupt_signal() -> None:
    """Called by the signal handler before it raises KeyboardInterrupt."""
    global _signal_seen
    _signal_seen = True


@contextlib.contextmanager
def user_code(what: str) -> Iterator[None]:
    """Run code that may call the model's code: its ``SystemExit`` (``sys.exit()``, ``exit()``), and a
    ``KeyboardInterrupt`` no signal caused, become ``MODULE_EXITED`` instead of ending the program
    with exit status 0 and no message.

    Example:
        >>> with user_code("the model"):      # doctest: +ELLIPSIS
        ...     raise SystemExit(0)
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: MODULE_EXITED: the model raised SystemExit(0) ...
    """
    try:
        yield
    except SystemExit as exc:
        raise ConversionError("MODULE_EXITED", f"{what} raised SystemExit({exc.code!r}) (a sys.exit() or "
                              "exit() call); the command stopped there", _EXIT_HINT) from None
    except KeyboardInterrupt:
        if _signal_seen is not False:  # a real Ctrl-C / SIGTERM, or no way to tell
            raise
        raise ConversionError("MODULE_EXITED", f"{what} raised KeyboardInterrupt although no interrupt signal "
                              "arrived; the command stopped there", _EXIT_HINT) from None


_EXIT_HINT = ("model code runs inside flax2tfjs: remove sys.exit()/exit()/raise KeyboardInterrupt from the module's "
              "import, construction and __call__ (keep scripts under `if __name__ == \"__main__\":`)")
