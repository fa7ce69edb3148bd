"""Command line: ``python -m writer [COMMAND] ...`` (also the ``flax2tfjs`` script).

Commands: ``convert`` (the default: ``python -m writer CKPT OUT`` is
``python -m writer convert CKPT OUT``), ``inspect``, ``verify``,
``export-savedmodel`` and ``demo``. User mistakes print ``error[CODE]: ...``
and ``hint: ...`` and exit with 2; a failed verification exits with 1, as do
internal faults; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from topology.vocabulary.errors import ConversionError
from writer.option_parser import OptionParser

PROG = "python -m writer"

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

CONVERT_EXAMPLES = f"""examples:
  {PROG} examples/mnist_ckpt out/
  {PROG} examples/mnist_ckpt out/ --verify --data mnist_test.npz
  {PROG} ckpt/ out/ --quantize uint8 --quantize-weights 'Dense*'
  {PROG} params.msgpack out/ --input-shape 28,28,1 --pool max --force
  {PROG} ckpt/ out/ --module models/resnet.py:ResNet --input-shape 32,32,3
  {PROG} tokens.msgpack out/ --module mypkg.models:TextClassifier --input-shape 64 --input-dtype int32
  {PROG} ckpt_dir/ out/ --step 2000 --metadata labels=labels.json
  {PROG} ckpt_dir/ out/ --all-steps              # every step, into out/step_<N>/
  {PROG} ckpt/ out/ --module models/resnet.py:ResNet --input-shape 64,64,3 --no-optimize   # keep BatchNorm layers
  {PROG} ckpt/ out/ --preset mobile              # uint8 weights, 1 MiB shards
"""

INSPECT_EXAMPLES = f"""examples:
  {PROG} inspect examples/mnist_ckpt
  {PROG} inspect state.msgpack --all              # also list ignored subtrees (opt_state, ...)
  {PROG} inspect ckpt/ --depth 2                  # fold everything below two levels
  {PROG} inspect ckpt/ --module models/cnn.py:CNN --input-shape 28,28,1
  {PROG} inspect ckpt/ --json > tree.json          # schemas/inspect.schema.json
"""

VERIFY_EXAMPLES = f"""examples:
  {PROG} verify out/ examples/mnist_ckpt
  {PROG} verify out/ examples/mnist_ckpt --data mnist_test.npz          # x, y arrays: adds accuracy
  {PROG} verify out/ ckpt/ --module models/cnn.py:CNN --backend cpu
  {PROG} verify out/ ckpt/ --tolerance 1e-3 --samples 256 --json        # schemas/verify.schema.json

exit status: 0 when the outputs agree within --tolerance, 1 when they do not (or TF.js cannot run
the model), 2 for a usage or input error.
"""

EXPORT_EXAMPLES = f"""examples:
  {PROG} export-savedmodel out/ saved/ --checkpoint examples/mnist_ckpt
  {PROG} export-savedmodel out/ saved/ --tf-python .venv-tfjs/bin/python --force
  {PROG} export-savedmodel out/ saved/            # compares with TF.js instead of JAX

Needs TensorFlow with Keras 2 (tf-keras): pip install 'flax2tfjs[tensorflow]', or an interpreter
that has them (--tf-python, $FLAX2TFJS_TF_PYTHON, or .venv-tfjs from scripts/setup_tfjs_venv.sh).
"""


def _shape(text: str) -> tuple[int, ...]:
    if text.strip() in ("", "scalar"):  # one number per example (e.g. sequence lengths): shape ()
        return ()
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 28,28,1") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 28,28,1")
    return shape


def _parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    return OptionParser(prog=prog, description=description, epilog=epilog,
                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_model_options(parser: argparse.ArgumentParser, dtype: bool = True,
                       shape_help: str = "default: solved from the parameters", all_steps: bool = False) -> None:
    model = parser.add_argument_group("topology (traced from --module, else inferred from the parameter tree)")
    model.add_argument("--module", metavar="FILE.py:NAME", help="model code: a Linen/NNX module class, instance or "
                       "zero-argument factory, as path/to/model.py:Name or package.module:Name")
    model.add_argument("--input-shape", type=_shape, action="append", metavar="SHAPE",
                       help=f"input shape without batch, e.g. 28,28,1 (repeat for several inputs; {shape_help})")
    if dtype:
        model.add_argument("--input-dtype", choices=("float32", "int32"), action="append", metavar="{float32,int32}",
                           help="input dtype (int32 for token ids); once for all inputs, or once per --input-shape")
    model.add_argument("--activation", default="relu", help="activation between layers (default relu)")
    model.add_argument("--pool", default="avg", choices=("avg", "max", "none"), help="pooling after each conv (default avg)")
    model.add_argument("--step", type=int, help="checkpoint step to read (default: newest)")
    if all_steps:
        model.add_argument("--all-steps", action="store_true",
                           help="convert every step of a CheckpointManager or checkpoint_<N> folder into OUT/step_<N>/")
    model.add_argument("--no-fix", dest="fix", action="store_false",
                       help="report fixable mismatches (keys, shapes, dtypes) as errors instead of repairing them")


def _add_optimize_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimize", action=argparse.BooleanOptionalAction, default=True,
                        help="exact graph rewrites: fold BatchNorm into Dense/Conv, drop Dropout and identities, fuse "
                             "activations, merge Rescaling layers (default on; --no-optimize writes the literal graph)")


def _add_verify_options(group: argparse._ArgumentGroup, prefix: str = "") -> None:
    group.add_argument("--data", metavar="FILE.npz", help="inputs x (and labels y) to compare on; default: random inputs")
    group.add_argument("--samples", type=int, metavar="N", help="random samples (default 64), or the first N of --data")
    group.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    group.add_argument("--backend", choices=("wasm", "cpu"), default="wasm", help="TF.js backend in Node (default wasm)")
    group.add_argument("--tolerance", type=float, metavar="T",
                       help="pass when max abs error <= T x max(1, max|JAX output|) (default 1e-4; "
                            "1e-2 for float16/uint16 weights, 5e-2 for uint8)")


def _add_output_options(parser: argparse.ArgumentParser, json_help: str) -> argparse._ArgumentGroup:
    out = parser.add_argument_group("output")
    out.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors (no progress bars)")
    out.add_argument("--json", action="store_true", help=json_help)
    out.add_argument("--debug", action="store_true", help="show Python tracebacks")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the convert command.

    Example:
        >>> build_parser().parse_args(["ck", "out", "--quantize", "uint8"]).quantize
        'uint8'
    """
    parser = _parser(f"{PROG} [convert]",
                     "Convert a Flax checkpoint into a TensorFlow.js LayersModel (model.json + weight shards).",
                     CONVERT_EXAMPLES)
    parser.add_argument("checkpoint", help="Flax msgpack file, Orbax folder (StandardCheckpointer or CheckpointManager), or .npz")
    parser.add_argument("out_dir", help="output folder (created; must be empty unless --force)")
    _add_model_options(parser, all_steps=True)
    _add_optimize_option(parser)
    weights = parser.add_argument_group("weights")
    weights.add_argument("--preset", choices=("web", "mobile"), help="web: float16 + 4 MiB shards; mobile: uint8 + "
                         "1 MiB shards + optimisation (explicit options win)")
    weights.add_argument("--quantize", choices=("float16", "uint8", "uint16"), help="store weights quantized")
    weights.add_argument("--quantize-weights", action="append", default=[], metavar="PATTERN",
                         help="only quantize weights whose <layer>/<weight> name matches (wildcards; repeatable)")
    weights.add_argument("--weight-shard-size-bytes", type=int, metavar="N",
                         help="shard file size (default 4194304)")
    weights.add_argument("--allow-nonfinite", action="store_true", help="write NaN/Inf weights instead of refusing")
    check = parser.add_argument_group("verification (see `verify --help`)")
    check.add_argument("--verify", action="store_true", help="after converting, run the verify command on the result")
    _add_verify_options(check)
    out = _add_output_options(parser, "print the report as JSON (with --verify: the verify report under 'verify')")
    out.add_argument("--metadata", action="append", default=[], metavar="KEY=FILE.json",
                     help="add a JSON file to userDefinedMetadata under KEY (repeatable)")
    out.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    return parser


def build_inspect_parser() -> argparse.ArgumentParser:
    """Arguments of ``inspect``.

    Example:
        >>> build_inspect_parser().parse_args(["ck", "--depth", "2"]).depth
        2
    """
    parser = _parser(f"{PROG} inspect", "Show what a checkpoint holds: format, collections, the parameter tree "
                     "(shape, dtype, parameters and bytes per tensor and subtree) and the layer graph a conversion "
                     "would write, with its assumptions. Reads no weight data.", INSPECT_EXAMPLES)
    parser.add_argument("checkpoint", help="Flax msgpack file, Orbax folder or .npz")
    _add_model_options(parser)
    _add_optimize_option(parser)
    view = _add_output_options(parser, "print one JSON document (schemas/inspect.schema.json)")
    view.add_argument("--depth", type=int, metavar="N", help="list N levels of the tree (deeper levels are summed)")
    view.add_argument("--all", action="store_true", help="also list the inside of ignored subtrees (opt_state, ...)")
    return parser


def build_verify_parser() -> argparse.ArgumentParser:
    """Arguments of ``verify``.

    Example:
        >>> build_verify_parser().parse_args(["out", "ck", "--backend", "cpu"]).backend
        'cpu'
    """
    parser = _parser(f"{PROG} verify", "Run the converted model in real TF.js (Node) and the original in JAX on the "
                     "same inputs; report errors, agreement, accuracy, load time, latency and size.", VERIFY_EXAMPLES)
    parser.add_argument("out_dir", help="the converted model folder (holding model.json)")
    parser.add_argument("checkpoint", help="the checkpoint it was converted from")
    _add_model_options(parser, dtype=False, shape_help="default and checked: model.json's")
    check = parser.add_argument_group("comparison")
    _add_verify_options(check)
    check.add_argument("--repeat", type=int, default=20, metavar="N", help="batch-1 runs timed for the latency (default 20)")
    check.add_argument("--batch-size", type=int, default=256, metavar="N", help="samples per TF.js/JAX call (default 256)")
    _add_output_options(parser, "print one JSON document (schemas/verify.schema.json)")
    return parser


def build_export_parser() -> argparse.ArgumentParser:
    """Arguments of ``export-savedmodel``.

    Example:
        >>> build_export_parser().parse_args(["out", "saved"]).samples
        16
    """
    parser = _parser(f"{PROG} export-savedmodel", "Build a TensorFlow SavedModel from a converted model.json, save "
                     "it, reload it and compare its outputs with the original in JAX (--checkpoint) or with TF.js.",
                     EXPORT_EXAMPLES)
    parser.add_argument("out_dir", help="the converted model folder (holding model.json)")
    parser.add_argument("saved_dir", help="the SavedModel folder to write (must be empty unless --force)")
    parser.add_argument("--checkpoint", metavar="CKPT", help="compare with this checkpoint run in JAX (recommended)")
    _add_model_options(parser, dtype=False, shape_help="default and checked: model.json's")
    check = parser.add_argument_group("export")
    check.add_argument("--tf-python", metavar="PATH", help="a Python interpreter with tensorflow and tf-keras")
    check.add_argument("--samples", type=int, default=16, metavar="N", help="random samples compared (default 16)")
    check.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    check.add_argument("--tolerance", type=float, metavar="T", help="as for verify (default 1e-4 for float32 weights)")
    check.add_argument("--backend", choices=("wasm", "cpu"), default="wasm",
                       help="TF.js backend when comparing without --checkpoint")
    check.add_argument("--force", action="store_true", help="replace a non-empty SAVED_DIR")
    _add_output_options(parser, "print the report as JSON")
    return parser


# ---------------------------------------------------------------------------------------------
# Commands


def _input_dtype(args: argparse.Namespace):
    dtypes = getattr(args, "input_dtype", None) or ["float32"]
    return dtypes[0] if len(dtypes) == 1 else dtypes


def _input_shape(args: argparse.Namespace):
    if not args.input_shape:
        return None
    return args.input_shape[0] if len(args.input_shape) == 1 else args.input_shape


def _convert_options(args: argparse.Namespace, **extra):
    from writer.convert import ConvertOptions

    fields = dict(input_shape=_input_shape(args), input_dtype=_input_dtype(args),
                  module=args.module, activation=args.activation, pool=args.pool, step=args.step, **extra)
    if "fix" in ConvertOptions.__dataclass_fields__:
        fields["fix"] = args.fix
    fields["optimize"] = getattr(args, "optimize", True)  # convert and inspect have --no-optimize
    return ConvertOptions(**fields)


def _verify_options(args: argparse.Namespace, **extra):
    from writer.verify import VerifyOptions

    return VerifyOptions(module=args.module, input_shape=_input_shape(args), activation=args.activation,
                         pool=args.pool, step=args.step, data=args.data, samples=args.samples, seed=args.seed,
                         backend=args.backend, tolerance=args.tolerance, fix=args.fix, **extra)


def run_convert(argv: Sequence[str]) -> int:
    """``convert`` (the default command); returns the exit status.

    Example:
        >>> run_convert(["examples/mnist_ckpt", "out", "--quiet"])   # doctest: +SKIP
        0
    """
    from writer.convert import convert
    from writer.progress import ProgressBar
    from writer.provenance import read_metadata_option
    from writer.term import Style

    args = build_parser().parse_args(argv)
    if not args.verify and (args.data or args.samples is not None or args.tolerance is not None):
        raise ConversionError("BAD_OPTION", "--data, --samples and --tolerance need --verify", "add --verify")
    patterns = tuple(p for item in args.quantize_weights for p in item.split(",") if p)
    weights = _preset_weights(args)
    options = _convert_options(
        args, quantize_weights=patterns, metadata=dict(read_metadata_option(spec) for spec in args.metadata),
        force=args.force, allow_nonfinite=args.allow_nonfinite, **weights)
    if args.all_steps:
        return _run_all_steps(args, options)
    bar = ProgressBar("writing weights", unit="tensors", enabled=False if args.quiet else None)
    with bar:  # the engine's tensor events carry the exact totals
        report = convert(args.checkpoint, args.out_dir, options, events=bar.on_event)
    verified = None
    if args.verify:
        from writer.verify import verify

        verified = verify(args.out_dir, args.checkpoint, _verify_options(args), progress=False if args.quiet else None)
    style = Style(sys.stdout)
    if args.json:
        document = report.to_json()
        if verified is not None:
            document["verify"] = verified.to_json()
        print(json.dumps(document, indent=2))
    elif not args.quiet:
        print(report.render())
        if verified is not None:
            print()
            print(verified.render(style))
    if verified is not None and not verified.passed:
        if args.quiet:
            print("verify FAIL: " + "; ".join(verified.failures), file=sys.stderr)
        return 1
    return 0


def _run_all_steps(args: argparse.Namespace, options) -> int:
    """``convert --all-steps``: every step into OUT/step_<N>/, one progress bar, one summary table."""
    from writer.all_steps import convert_all_steps
    from writer.progress import ProgressBar

    if args.verify:
        raise ConversionError("BAD_OPTION", "--verify works on one model, not with --all-steps",
                              f"convert, then verify one step: {PROG} verify OUT/step_N CKPT --step N")
    bar = ProgressBar("writing weights", unit="tensors", enabled=False if args.quiet else None)
    with bar:  # the steps' tensor events carry the totals: no extra pass over the checkpoints
        report = convert_all_steps(args.checkpoint, args.out_dir, options, events=bar.on_event)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif not args.quiet:
        print(report.render())
    return 0


def _preset_weights(args: argparse.Namespace) -> dict:
    """quantize / shard size (/ optimize) from --preset, overridden by the explicit flags."""
    from writer.presets import preset_fields
    from writer.shards import DEFAULT_SHARD_BYTES

    fields = preset_fields(args.preset) if args.preset else {}
    fields.setdefault("weight_shard_size_bytes", DEFAULT_SHARD_BYTES)
    if args.quantize is not None:
        fields["quantize"] = args.quantize
    if args.weight_shard_size_bytes is not None:
        fields["weight_shard_size_bytes"] = args.weight_shard_size_bytes
    if getattr(args, "optimize", None) is not None:  # --optimize/--no-optimize, where the engine has them
        fields["optimize"] = args.optimize
    return fields


def run_inspect(argv: Sequence[str]) -> int:
    """``inspect``; returns the exit status.

    Example:
        >>> run_inspect(["examples/mnist_ckpt", "--json"])   # doctest: +SKIP
        0
    """
    from writer.inspect_tree import inspect_checkpoint
    from writer.term import Style

    args = build_inspect_parser().parse_args(argv)
    if args.depth is not None and args.depth < 1:
        raise ConversionError("BAD_OPTION", f"--depth {args.depth}", "give 1 or more")
    report = inspect_checkpoint(args.checkpoint, _convert_options(args))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif not args.quiet:
        print(report.render(Style(sys.stdout), depth=args.depth, expand_ignored=args.all))
    return 0


def run_verify(argv: Sequence[str]) -> int:
    """``verify``; returns 0 (agree), 1 (differ) or 2 (usage error, raised).

    Example:
        >>> run_verify(["out", "examples/mnist_ckpt"])   # doctest: +SKIP
        0
    """
    from writer.term import Style
    from writer.verify import verify

    args = build_verify_parser().parse_args(argv)
    options = _verify_options(args, repeat=args.repeat, batch_size=args.batch_size)
    report = verify(args.out_dir, args.checkpoint, options, progress=False if args.quiet or args.json else None)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif not args.quiet:
        print(report.render(Style(sys.stdout)))
    if not report.passed:
        if args.quiet:
            print("verify FAIL: " + "; ".join(report.failures), file=sys.stderr)
        return 1
    return 0


def run_export(argv: Sequence[str]) -> int:
    """``export-savedmodel``; returns 0 when the SavedModel was written and matches, 1 when it does not match.

    Example:
        >>> run_export(["out", "saved", "--checkpoint", "examples/mnist_ckpt"])   # doctest: +SKIP
        0
    """
    from writer.savedmodel import export_savedmodel
    from writer.term import Style
    from writer.verify import VerifyOptions

    args = build_export_parser().parse_args(argv)
    options = VerifyOptions(module=args.module, input_shape=_input_shape(args), activation=args.activation,
                            pool=args.pool, step=args.step, backend=args.backend, fix=args.fix)
    report = export_savedmodel(args.out_dir, args.saved_dir, checkpoint=args.checkpoint, options=options,
                               force=args.force, tf_python=args.tf_python, samples=args.samples, seed=args.seed,
                               tolerance=args.tolerance)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif not args.quiet:
        print(report.render(Style(sys.stdout)))
    if not report.passed:
        if args.quiet:
            print("export-savedmodel FAIL: the SavedModel's outputs differ; nothing was written", file=sys.stderr)
        return 1
    return 0


def run_demo(argv: Sequence[str]) -> int:
    """``demo``: handed to :func:`writer.demo.main`.

    Example:
        >>> run_demo(["out/", "--port", "0"])   # doctest: +SKIP
    """
    try:
        from writer import demo
    except ImportError as exc:
        raise ConversionError("DEMO_UNAVAILABLE", f"the demo command is not available in this installation ({exc})",
                              "reinstall the package: pip install --force-reinstall flax2tfjs") from None
    return demo.main(list(argv), prog=f"{PROG} demo")


def run_studio(argv: Sequence[str]) -> int:
    """``studio``: handed to :func:`writer.studio.main`.

    Example:
        >>> run_studio([".", "--port", "0"])   # doctest: +SKIP
    """
    from writer import studio

    return studio.main(list(argv), prog=f"{PROG} studio")


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "convert": run_convert, "inspect": run_inspect, "verify": run_verify,
    "export-savedmodel": run_export, "demo": run_demo, "studio": run_studio,
}


def _interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the staging folder is removed on the way out."""
    import signal
    import threading

    def interrupt(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


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
            from writer.version import __version__

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
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as exc:  # an internal fault, not a user mistake
        if debug:
            raise
        from writer.extras import extra_error, missing_extra

        extra = missing_extra(exc.name) if isinstance(exc, ModuleNotFoundError) else None
        if extra is not None:  # an optional part (jax, flax, tensorflow) is not installed
            print(extra_error(extra, f"this command (it imports {exc.name})").render(), file=sys.stderr)
            return 2
        print(f"error[INTERNAL]: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: this is a bug in flax2tfjs; rerun with --debug and report the traceback", file=sys.stderr)
        return 1
