"""``python -m writer inspect CKPT``: what a checkpoint holds and the graph a conversion would write.

Example:
    >>> build_inspect_parser().parse_args(["ck", "--all"]).all
    True
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from topology.vocabulary.errors import ConversionError
from writer.flags import add_format_option, add_model_options, add_optimize_option, add_output_options, command_parser, convert_options
from writer.inspect_tree import inspect_checkpoint
from writer.module_loader import user_code
from writer.option_parser import PROG
from writer.term import Style

INSPECT_EXAMPLES = f"""examples:
  {PROG} inspect examples/mnist_ckpt
  {PROG} inspect state.msgpack --all              # also list ignored subtrees (opt_state, ...)
  {PROG} inspect ckpt/ --depth 2                  # fold everything below two levels
  {PROG} inspect ckpt/ --module models/cnn.py:CNN --input-shape 28,28,1
  {PROG} inspect ckpt/ --json > tree.json          # schemas/inspect.schema.json
"""

def build_inspect_parser() -> argparse.ArgumentParser:
    """Arguments of ``inspect``.

    Example:
        >>> build_inspect_parser().parse_args(["ck", "--depth", "2"]).depth
        2
    """
    parser = command_parser(f"{PROG} inspect", "Show what a checkpoint holds: format, collections, the parameter tree "
                     "(shape, dtype, parameters and bytes per tensor and subtree) and the layer graph a conversion "
                     "would write, with its assumptions. Reads no weight data.", INSPECT_EXAMPLES)
    parser.add_argument("checkpoint", help="Flax msgpack file, Orbax folder or .npz")
    add_model_options(parser)
    add_optimize_option(parser)
    add_format_option(parser)
    view = add_output_options(parser, "print one JSON document (schemas/inspect.schema.json)")
    view.add_argument("--depth", type=int, metavar="N", help="list N levels of the tree (deeper levels are summed)")
    view.add_argument("--all", action="store_true", help="also list the inside of ignored subtrees (opt_state, ...)")
    return parser


def run_inspect(argv: Sequence[str]) -> int:
    """``inspect``; returns the exit status.

    Example:
        >>> run_inspect(["examples/mnist_ckpt", "--json"])   # doctest: +SKIP
        0
    """
    args = build_inspect_parser().parse_args(argv)
    if args.depth is not None and args.depth < 1:
        raise ConversionError("BAD_OPTION", f"--depth {args.depth}", "give 1 or more")
    with user_code("the model's code"):  # its sys.exit() is MODULE_EXITED, not a silent exit
        report = inspect_checkpoint(args.checkpoint, convert_options(args))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif not args.quiet:
        print(report.render(Style(sys.stdout), depth=args.depth, expand_ignored=args.all))
    return 0
