"""``python -m writer verify OUT CKPT``: the converted model in TF.js against the original in JAX.

Example:
    >>> build_verify_parser().parse_args(["out", "ck", "--repeat", "5"]).repeat
    5
"""
from __future__ import annotations

import argparse
from typing import Sequence

from writer.commands import print_checked_report
from writer.flags import add_model_options, add_output_options, add_verify_options, command_parser, default_of, verify_fields
from writer.module_loader import user_code
from writer.option_parser import PROG
from writer.verify import VerifyOptions, verify

VERIFY_EXAMPLES = f"""examples:
  {PROG} verify out/ examples/mnist_ckpt
  {PROG} verify out/ examples/mnist_ckpt --data mnist_test.npz          # x, y arrays: adds accuracy
  {PROG} verify out/ ckpt/ --module models/cnn.py:CNN --backend cpu
  {PROG} verify out/ ckpt/ --tolerance 1e-3 --samples 256 --json        # schemas/verify.schema.json

exit status: 0 when the outputs agree within --tolerance, 1 when they do not (or TF.js cannot run
the model), 2 for a usage or input error.
"""

def build_verify_parser() -> argparse.ArgumentParser:
    """Arguments of ``verify``.

    Example:
        >>> build_verify_parser().parse_args(["out", "ck", "--backend", "cpu"]).backend
        'cpu'
    """
    parser = command_parser(f"{PROG} verify", "Run the converted model in real TF.js (Node) and the original in JAX on the "
                     "same inputs; report errors, agreement, accuracy, load time, latency and size.", VERIFY_EXAMPLES)
    parser.add_argument("out_dir", help="the converted model folder (holding model.json)")
    parser.add_argument("checkpoint", help="the checkpoint it was converted from")
    add_model_options(parser, shape_help="default and checked: model.json's")
    check = parser.add_argument_group("comparison")
    add_verify_options(check)
    repeat, batch = default_of(VerifyOptions, "repeat"), default_of(VerifyOptions, "batch_size")
    check.add_argument("--repeat", type=int, default=repeat, metavar="N",
                       help=f"batch-1 runs timed for the latency (default {repeat})")
    check.add_argument("--batch-size", type=int, default=batch, metavar="N",
                       help=f"samples per TF.js/JAX call (default {batch})")
    add_output_options(parser, "print one JSON document (schemas/verify.schema.json)")
    return parser


def run_verify(argv: Sequence[str]) -> int:
    """``verify``; returns 0 (agree), 1 (differ) or 2 (usage error, raised).

    Example:
        >>> run_verify(["out", "examples/mnist_ckpt"])   # doctest: +SKIP
        0
    """
    args = build_verify_parser().parse_args(argv)
    options = VerifyOptions(**verify_fields(args), repeat=args.repeat, batch_size=args.batch_size)
    with user_code("the model's code"):  # its sys.exit() is MODULE_EXITED, not a silent exit
        report = verify(args.out_dir, args.checkpoint, options, progress=False if args.quiet or args.json else None)
    return print_checked_report(report, args, lambda: "verify FAIL: " + "; ".join(report.failures))
