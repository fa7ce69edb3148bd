"""Command line: ``python -m writer CKPT OUT [options]`` (also the ``flax2tfjs`` script).

User mistakes print ``error[CODE]: ...`` and ``hint: ...`` and exit with 2;
internal faults exit with 1; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from writer.errors import ConversionError

EXAMPLES = """examples:
  python -m writer examples/mnist_ckpt out/
  python -m writer ckpt/ out/ --quantize uint8 --quantize-weights 'Dense*'
  python -m writer params.msgpack out/ --input-shape 28,28,1 --pool max --force
  python -m writer ckpt/ out/ --module models/resnet.py:ResNet --input-shape 32,32,3
  python -m writer tokens.msgpack out/ --module mypkg.models:TextClassifier --input-shape 64 --input-dtype int32
  python -m writer ckpt_dir/ out/ --step 2000 --metadata labels=labels.json
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print its own format and exit
        raise ConversionError("BAD_OPTION", message, f"see `{self.prog} --help`")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 28,28,1") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 28,28,1")
    return shape


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the convert command.

    Example:
        >>> build_parser().parse_args(["ck", "out", "--quantize", "uint8"]).quantize
        'uint8'
    """
    parser = _Parser(
        prog="python -m writer",
        description="Convert a Flax checkpoint into a TensorFlow.js LayersModel (model.json + weight shards).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="Flax msgpack file, Orbax folder (StandardCheckpointer or CheckpointManager), or .npz")
    parser.add_argument("out_dir", help="output folder (created; must be empty unless --force)")
    model = parser.add_argument_group("topology (traced from --module, else inferred from the parameter tree)")
    model.add_argument("--module", metavar="FILE.py:NAME", help="model code: a Linen/NNX module class, instance or "
                       "zero-argument factory, as path/to/model.py:Name or package.module:Name")
    model.add_argument("--input-shape", type=_shape, action="append", metavar="SHAPE",
                       help="input shape without batch, e.g. 28,28,1 (repeat for several inputs; "
                            "default: solved from the parameters)")
    model.add_argument("--input-dtype", choices=("float32", "int32"), default="float32",
                       help="input dtype (int32 for token ids)")
    model.add_argument("--activation", default="relu", help="activation between layers (default relu)")
    model.add_argument("--pool", default="avg", choices=("avg", "max", "none"), help="pooling after each conv (default avg)")
    model.add_argument("--step", type=int, help="checkpoint step to read (default: newest)")
    weights = parser.add_argument_group("weights")
    weights.add_argument("--quantize", choices=("float16", "uint8", "uint16"), help="store weights quantized")
    weights.add_argument("--quantize-weights", action="append", default=[], metavar="PATTERN",
                         help="only quantize weights whose <layer>/<weight> name matches (wildcards; repeatable)")
    weights.add_argument("--weight-shard-size-bytes", type=int, default=4 * 1024 * 1024, metavar="N",
                         help="shard file size (default 4194304)")
    weights.add_argument("--allow-nonfinite", action="store_true", help="write NaN/Inf weights instead of refusing")
    out = parser.add_argument_group("output")
    out.add_argument("--metadata", action="append", default=[], metavar="KEY=FILE.json",
                     help="add a JSON file to userDefinedMetadata under KEY (repeatable)")
    out.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    out.add_argument("--quiet", action="store_true", help="print nothing but errors")
    out.add_argument("--json", action="store_true", help="print the report as JSON")
    out.add_argument("--debug", action="store_true", help="show Python tracebacks")
    return parser


def run_convert(argv: Sequence[str]) -> int:
    from writer.convert import ConvertOptions, convert
    from writer.provenance import read_metadata_option

    args = build_parser().parse_args(argv)
    patterns = tuple(p for item in args.quantize_weights for p in item.split(",") if p)
    options = ConvertOptions(
        input_shape=(args.input_shape[0] if len(args.input_shape) == 1 else args.input_shape) if args.input_shape else None,
        input_dtype=args.input_dtype, module=args.module, activation=args.activation, pool=args.pool, quantize=args.quantize,
        quantize_weights=patterns, weight_shard_size_bytes=args.weight_shard_size_bytes,
        metadata=dict(read_metadata_option(spec) for spec in args.metadata), force=args.force,
        step=args.step, allow_nonfinite=args.allow_nonfinite,
    )
    report = convert(args.checkpoint, args.out_dir, options)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif not args.quiet:
        print(report.render())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit status.

    Example:
        >>> main(["--help"])   # doctest: +SKIP
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return run_convert(argv)
    except ConversionError as err:
        if debug:
            raise
        print(err.render(), file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        print("interrupted; the output folder was left as it was", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal fault, not a user mistake
        if debug:
            raise
        print(f"error[INTERNAL]: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: this is a bug in flax2tfjs; rerun with --debug and report the traceback", file=sys.stderr)
        return 1
