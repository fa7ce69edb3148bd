"""``python -m writer [convert] CKPT OUT``: a checkpoint into a TF.js LayersModel (``--all-steps``: every step).

Example:
    >>> build_parser().parse_args(["ck", "out", "--preset", "web"]).preset
    'web'
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from topology.vocabulary.errors import ConversionError
from writer.commands.convert.all_steps import convert_all_steps
from writer.convert import ConvertOptions, convert
from writer.flags import (
    add_format_option, add_model_options, add_optimize_option, add_output_options, add_verify_options, add_weight_options,
    command_parser, convert_options, verify_fields, weight_options,
)
from writer.module_loader import user_code
from writer.option_parser import PROG
from writer.progress import MODULE_STAGE_TEXT, STAGE_TEXT, ProgressBar
from writer.term import Style

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

def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the convert command.

    Example:
        >>> build_parser().parse_args(["ck", "out", "--quantize", "uint8"]).quantize
        'uint8'
    """
    parser = command_parser(f"{PROG} [convert]",
                     "Convert a Flax checkpoint into a TensorFlow.js LayersModel (model.json + weight shards).",
                     CONVERT_EXAMPLES)
    parser.add_argument("checkpoint", help="Flax msgpack file, Orbax folder (StandardCheckpointer or CheckpointManager), or .npz")
    parser.add_argument("out_dir", help="output folder (created; must be empty unless --force)")
    add_model_options(parser, all_steps=True)
    add_optimize_option(parser)
    add_format_option(parser)
    add_weight_options(parser)
    check = parser.add_argument_group("verification (see `verify --help`)")
    check.add_argument("--verify", action="store_true", help="after converting, run the verify command on the result")
    add_verify_options(check)
    out = add_output_options(parser, "print the report as JSON (with --verify: the verify report under 'verify')")
    out.add_argument("--metadata", action="append", default=[], metavar="KEY=FILE.json",
                     help="add a JSON file to userDefinedMetadata under KEY (repeatable)")
    out.add_argument("--full-hash", action="store_true", help="name a checkpoint over 64 MiB in the metadata by "
                     "the sha256 of all its bytes (default: a sampled fingerprint, a second full read saved)")
    out.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    return parser


def run_convert(argv: Sequence[str]) -> int:
    """``convert`` (the default command); returns the exit status.

    Example:
        >>> run_convert(["examples/mnist_ckpt", "out", "--quiet"])   # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(argv)
    if not args.verify and (args.data or args.samples is not None or args.tolerance is not None):
        raise ConversionError("BAD_OPTION", "--data, --samples and --tolerance need --verify", "add --verify")
    options = convert_options(args, **weight_options(args))
    if args.all_steps:
        return _run_all_steps(args, options)
    bar = ProgressBar("writing weights", unit="tensors", enabled=False if args.quiet else None,
                      stage_text=MODULE_STAGE_TEXT if args.module else STAGE_TEXT)
    with bar:  # the engine's stage events show what it does until the tensor events bring the exact totals
        report = convert(args.checkpoint, args.out_dir, options, events=bar.on_event)
    verified = None
    if args.verify:
        from writer.verify import VerifyOptions, verify  # JAX and TF.js runners: loaded only for --verify

        with user_code("the model's code"):  # its sys.exit() is MODULE_EXITED, not a silent exit
            verified = verify(args.out_dir, args.checkpoint, VerifyOptions(**verify_fields(args)), progress=False if args.quiet else None)
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


def _run_all_steps(args: argparse.Namespace, options: ConvertOptions) -> int:
    """``convert --all-steps``: every step into OUT/step_<N>/, one progress bar, one summary table."""
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
