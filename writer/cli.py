"""Command line: ``python -m writer [COMMAND] ...`` (also the ``flax2tfjs`` script).

Commands: ``convert`` (the default: ``python -m writer CKPT OUT`` is
``python -m writer convert CKPT OUT``), ``inspect``, ``verify``,
``export-savedmodel`` and ``demo``. User mistakes print ``error[CODE]: ...``
and ``hint: ...`` and exit with 2; a failed verification exits with 1, as do
internal faults; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable, Sequence

from topology.vocabulary.errors import ConversionError
from writer.extras import extra_error, missing_extra
from writer.module_loader import note_interrupt_signal, watch_interrupt_signals
from writer.option_parser import PROG
from writer.version import __version__

OVERVIEW = f"""usage: {PROG} [convert] CKPT OUT [options]
       {PROG} inspect CKPT [options]
       {PROG} verify OUT CKPT [options]
       {PROG} export-savedmodel OUT SAVED_DIR [options]
       {PROG} demo [MODEL_DIR] [--port N]
       {PROG} studio [ROOT] [--port N]

Convert JAX/Flax checkpoints into TensorFlow.js LayersModels, without TensorFlow.

commands:
  convert            checkpoint -> model.json + weight shards (the default command)
  inspect            the parameter tree, its collections, and the layer graph a conversion would write
  verify             run the converted model in real TF.js and the original in JAX, and compare
  export-savedmodel  a TensorFlow SavedModel from model.json, checked against JAX (needs TensorFlow)
  demo               serve the web demo and model tester on 127.0.0.1
  studio             a local web app: pick, inspect, convert (live), verify and test checkpoints under ROOT

`{PROG} COMMAND --help` shows a command's options and examples.

examples:
  {PROG} inspect examples/mnist_ckpt
  {PROG} examples/mnist_ckpt out/ --verify
  {PROG} verify out/ examples/mnist_ckpt --data mnist_test.npz
  {PROG} demo out/
"""


def run_convert(argv: Sequence[str]) -> int:
    """``convert`` (the default command): :func:`writer.commands.convert.run_convert`."""
    from writer.commands import convert  # the pipeline and numpy: not for --help, --version, demo or studio

    return convert.run_convert(argv)


def run_inspect(argv: Sequence[str]) -> int:
    """``inspect``: :func:`writer.commands.inspect.run_inspect`."""
    from writer.commands import inspect  # the pipeline and numpy: only for this command

    return inspect.run_inspect(argv)


def run_verify(argv: Sequence[str]) -> int:
    """``verify``: :func:`writer.commands.verify.run_verify`."""
    from writer.commands import verify  # the JAX and TF.js runners: only for this command

    return verify.run_verify(argv)


def run_export(argv: Sequence[str]) -> int:
    """``export-savedmodel``: :func:`writer.commands.export.run_export`."""
    from writer.commands import export  # the SavedModel builder: only for this command

    return export.run_export(argv)


def run_demo(argv: Sequence[str]) -> int:
    """``demo``: handed to :func:`writer.commands.demo.main`.

    Example:
        >>> run_demo(["out/", "--port", "0"])   # doctest: +SKIP
    """
    try:
        from writer.commands import demo  # an HTTP server: loaded only for this command
    except ImportError as exc:
        raise ConversionError("DEMO_UNAVAILABLE", f"the demo command is not available in this installation ({exc})",
                              "reinstall the package: pip install --force-reinstall flax2tfjs") from None
    return demo.main(list(argv), prog=f"{PROG} demo")


def run_studio(argv: Sequence[str]) -> int:
    """``studio``: handed to :func:`writer.commands.studio.main`.

    Example:
        >>> run_studio([".", "--port", "0"])   # doctest: +SKIP
    """
    from writer.commands import studio  # the pipeline and an HTTP server: loaded only for this command

    return studio.main(list(argv), prog=f"{PROG} studio")


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "convert": run_convert, "inspect": run_inspect, "verify": run_verify,
    "export-savedmodel": run_export, "demo": run_demo, "studio": run_studio,
}


def _interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the staging folder is removed on the way out. Both handlers note
    the signal, so that a KeyboardInterrupt raised by model code is told apart (MODULE_EXITED)."""
    def interrupt(signum, frame):  # noqa: ARG001
        note_interrupt_signal()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored SIGINT stays ignored
            signal.signal(signal.SIGINT, interrupt)
            watch_interrupt_signals()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit status.

    Example:
        >>> main(["--help"])   # doctest: +SKIP
    """
    if argv is None:  # run as a program (not called from Python code)
        _interrupt_on_sigterm()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(OVERVIEW, file=sys.stdout if argv else sys.stderr)
            return 0 if argv else 2
        if argv[0] == "--version":
            print(f"flax2tfjs {__version__}")
            return 0
        if argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return run_convert(argv)
    except ConversionError as err:
        if debug:
            raise
        print(err.render(), file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        print("interrupted; the output folder was left as it was", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `inspect ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as exc:  # an internal fault, not a user mistake
        if debug:
            raise
        extra = missing_extra(exc.name) if isinstance(exc, ModuleNotFoundError) else None
        if extra is not None:  # an optional part (jax, flax, tensorflow) is not installed
            print(extra_error(extra, f"this command (it imports {exc.name})").render(), file=sys.stderr)
            return 2
        print(f"error[INTERNAL]: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: this is a bug in flax2tfjs; rerun with --debug and report the traceback", file=sys.stderr)
        return 1
