"""The ``verify`` command: run the converted model in real TF.js and the original in JAX, compare.

Inputs are random (seeded) or the ``x`` / ``y`` arrays of an ``.npz`` file. The
original is the checkpoint's own parameters run in JAX:

* with ``--module``: the user's Flax module (Linen ``apply`` or NNX with the
  checkpoint's values), in inference mode;
* without it: the template model that ``convert`` inferred (the Flax MNIST
  example's Conv/pool/Dense stack), built from ``flax.linen`` layers
  (``nn.Conv``, ``nn.avg_pool``, ``nn.Dense``, ``jax.nn`` activations) and fed
  the checkpoint's tensors in Flax layout. It checks the conversion (weights,
  layouts, layer semantics) but cannot know whether the template is the user's
  real architecture: pass ``--module`` for that.

Before running anything, the topology in model.json is compared with the one the
checkpoint and options give (a wrong ``--pool`` or module is a usage error, not
a failed model) and every weight in the shards is compared, byte for byte, with
what the checkpoint says it must be, so a damaged file is named precisely.

Example:
    >>> report = verify("out/", "examples/mnist_ckpt", VerifyOptions(data="mnist_test.npz"))  # doctest: +SKIP
    >>> report.passed, report.accuracy                                                        # doctest: +SKIP
    (True, 0.983)

One module per job: :mod:`~writer.verify.options`, :mod:`~writer.verify.report` (what was found),
:mod:`~writer.verify.model_files` (model.json and the shards read back, through
:mod:`writer.tfjs_files`), :mod:`~writer.verify.inputs`, :mod:`~writer.verify.reference` and
:mod:`~writer.verify.jax_model` (the original in JAX), :mod:`~writer.verify.weight_check`,
:mod:`~writer.verify.outputs` (the comparison) and :mod:`~writer.verify.run` (all of it).
"""
from __future__ import annotations

from writer.verify.inputs import load_data, random_inputs
from writer.verify.model_files import ModelFiles, read_model
from writer.verify.options import BACKENDS, DEFAULT_TOLERANCE, VerifyOptions, check_options
from writer.verify.outputs import compare
from writer.verify.reference import Reference, build_reference
from writer.verify.report import VerificationFailed, VerifyReport, WeightMismatch, finite_or_none, metric_text
from writer.verify.run import verify
from writer.verify.weight_check import check_weights

__all__ = ["BACKENDS", "DEFAULT_TOLERANCE", "ModelFiles", "Reference", "VerificationFailed", "VerifyOptions",
           "VerifyReport", "WeightMismatch", "build_reference", "check_options", "check_weights", "compare",
           "finite_or_none", "load_data", "metric_text", "random_inputs", "read_model", "verify"]
