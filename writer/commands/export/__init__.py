"""``python -m writer export-savedmodel OUT SAVED_DIR``: a TensorFlow SavedModel from model.json, checked.

Example:
    >>> build_export_parser().parse_args(["out", "saved", "--force"]).force
    True
"""
from __future__ import annotations

import argparse
import inspect
from typing import Sequence

from writer.commands import print_checked_report
from writer.flags import (
    add_backend_option, add_model_options, add_output_options, add_samples_option, add_seed_option,
    add_tolerance_option, command_parser, verify_fields,
)
from writer.option_parser import PROG
from writer.commands.export.savedmodel import export_savedmodel
from writer.verify import VerifyOptions

EXPORT_DEFAULTS = {name: p.default for name, p in inspect.signature(export_savedmodel).parameters.items()}

EXPORT_EXAMPLES = f"""examples:
  {PROG} export-savedmodel out/ saved/ --checkpoint examples/mnist_ckpt
  {PROG} export-savedmodel out/ saved/ --tf-python .venv-tfjs/bin/python --force
  {PROG} export-savedmodel out/ saved/            # compares with TF.js instead of JAX

Needs TensorFlow with Keras 2 (tf-keras): pip install 'flax2tfjs[tensorflow]', or an interpreter
that has them (--tf-python, $FLAX2TFJS_TF_PYTHON, or in a flax2tfjs checkout .venv-tfjs from
scripts/setup_tfjs_venv.sh).
"""


def build_export_parser() -> argparse.ArgumentParser:
    """Arguments of ``export-savedmodel``.

    Example:
        >>> build_export_parser().parse_args(["out", "saved"]).samples
        16
    """
    parser = command_parser(f"{PROG} export-savedmodel", "Build a TensorFlow SavedModel from a converted model.json, save "
                     "it, reload it and compare its outputs with the original in JAX (--checkpoint) or with TF.js.",
                     EXPORT_EXAMPLES)
    parser.add_argument("out_dir", help="the converted model folder (holding model.json)")
    parser.add_argument("saved_dir", help="the SavedModel folder to write (must be empty unless --force)")
    parser.add_argument("--checkpoint", metavar="CKPT", help="compare with this checkpoint run in JAX (recommended)")
    add_model_options(parser, shape_help="default and checked: model.json's")
    check = parser.add_argument_group("export")
    check.add_argument("--tf-python", metavar="PATH", help="a Python interpreter with tensorflow and tf-keras")
    samples = EXPORT_DEFAULTS["samples"]
    add_samples_option(check, samples, f"random samples compared (default {samples})")
    add_seed_option(check, EXPORT_DEFAULTS["seed"])
    add_tolerance_option(check, "as for verify (default 1e-4 for float32 weights)")
    add_backend_option(check, "TF.js backend when comparing without --checkpoint")
    check.add_argument("--force", action="store_true", help="replace a non-empty SAVED_DIR")
    add_output_options(parser, "print the report as JSON")
    return parser


def run_export(argv: Sequence[str]) -> int:
    """``export-savedmodel``; returns 0 when the SavedModel was written and matches, 1 when it does not match.

    Example:
        >>> run_export(["out", "saved", "--checkpoint", "examples/mnist_ckpt"])   # doctest: +SKIP
        0
    """
    args = build_export_parser().parse_args(argv)
    options = VerifyOptions(**verify_fields(args, comparison=False))
    report = export_savedmodel(args.out_dir, args.saved_dir, checkpoint=args.checkpoint, options=options,
                               force=args.force, tf_python=args.tf_python, samples=args.samples, seed=args.seed,
                               tolerance=args.tolerance)
    return print_checked_report(report, args, lambda: "export-savedmodel FAIL: the SavedModel's outputs differ; nothing was written")
