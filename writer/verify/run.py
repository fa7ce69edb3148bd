"""The whole verification: read the model folder, build the JAX reference, check the weights, run both
models on the same inputs (in batches, with progress bars) and compare."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from topology.vocabulary.errors import Notices
from writer.progress import ProgressBar
from writer.tfjs_node import TfjsError, TfjsRunner
from writer.verify.inputs import load_data, random_inputs
from writer.verify.model_files import read_model
from writer.verify.options import DEFAULT_TOLERANCE, VerifyOptions, check_options
from writer.verify.outputs import compare
from writer.verify.reference import build_reference
from writer.verify.report import VerificationFailed, VerifyReport
from writer.verify.weight_check import check_weights


def verify(model_dir: str | Path, checkpoint: str | Path, options: VerifyOptions = VerifyOptions(), *,
           runner: Any = None, progress: bool | None = None) -> VerifyReport:
    """Run ``model_dir`` in real TF.js and the checkpoint's model in JAX on the same inputs; compare.

    ``runner`` is an open :class:`writer.tfjs_node.TfjsRunner` to reuse (one is
    started otherwise). ``progress`` shows bars on stderr (default: when it is a
    terminal).

    Example:
        >>> r = verify("out", "examples/mnist_ckpt", VerifyOptions(samples=16))   # doctest: +SKIP
        >>> r.passed, r.max_abs_error < 1e-4                                      # doctest: +SKIP
        (True, True)
    """
    started = time.perf_counter()
    check_options(options)
    model = read_model(model_dir)
    notices = Notices()
    opened: list = []
    own_runner = runner is None
    try:
        reference = build_reference(checkpoint, model, options, notices, opened)
        checked, mismatches = (0, []) if model.is_graph_model else check_weights(reference.graph, model,
                                                                                  strict=reference.same_topology)
        if options.data is not None:
            xs, labels = load_data(options.data, model.inputs, options.samples, notices)
        else:
            xs, labels = random_inputs(model.inputs, options.samples or 64, options.seed, model.document), None
        count = len(xs[0])
        batch = max(1, options.batch_size) if model.fixed_batch is None else model.fixed_batch
        enabled = None if progress is None else progress
        ref_out: list[list[np.ndarray]] = []
        with ProgressBar("JAX reference", total=count, unit="samples", enabled=enabled) as bar:
            for start in range(0, count, batch):
                ref_out.append(reference.run([x[start:start + batch] for x in xs]))
                bar.advance(min(batch, count - start))
        if own_runner:
            runner = TfjsRunner(timeout=options.timeout)
        tfjs_out: list[list[np.ndarray]] = []
        load_ms, batch_ms = None, []
        model_json = model.folder / "model.json"
        try:
            with ProgressBar(f"TF.js {options.backend}", total=count, unit="samples", enabled=enabled) as bar:
                for start in range(0, count, batch):
                    result = runner.predict(model.folder, [x[start:start + batch] for x in xs], backend=options.backend)
                    tfjs_out.append(result.outputs)
                    load_ms = result.load_ms if load_ms is None else load_ms
                    batch_ms.extend(result.predict_ms)
                    bar.advance(min(batch, count - start))
            timing = runner.predict(model.folder, [x[:1] for x in xs], backend=options.backend,
                                    repeat=max(1, options.repeat))
            version = runner.version()
        except TfjsError as exc:
            raise VerificationFailed("TFJS_FAILED", f"TF.js could not load or run {model_json}: {exc.message}",
                                     "reconvert into a fresh folder; if it persists, report it with the model.json") from None
        outputs_tfjs = [np.concatenate([part[i] for part in tfjs_out]) for i in range(len(tfjs_out[0]))]
        outputs_ref = [np.concatenate([part[i] for part in ref_out]) for i in range(len(ref_out[0]))]
        metrics = compare(outputs_tfjs, outputs_ref, labels)
        tolerance = options.tolerance if options.tolerance is not None else DEFAULT_TOLERANCE[model.quantization]
        report = VerifyReport(
            model_dir=model.folder, checkpoint=Path(checkpoint), reference=reference.kind,
            reference_description=reference.description, backend=options.backend,
            input_source="data" if options.data is not None else "random",
            data_path=Path(options.data) if options.data is not None else None,
            seed=None if options.data is not None else options.seed, samples=count,
            input_shapes=[list(x.shape[1:]) for x in xs],
            output_shapes=[list(o.shape[1:]) for o in outputs_tfjs],
            tolerance=tolerance, load_ms=float(load_ms or 0.0),
            predict_ms=float(statistics.median(timing.predict_ms)), predict_runs=len(timing.predict_ms),
            batch_predict_ms=float(statistics.median(batch_ms)) if batch_ms else 0.0,
            model_bytes=model.bytes, weights_checked=checked, weight_mismatches=mismatches,
            tfjs_version=version, notices=list(notices.items), batch_size=batch,
            optimized=model.optimized, rewrites=model.rewrites, **metrics)
        report.seconds = time.perf_counter() - started
        return report
    finally:
        for source in opened:
            source.close()
        if own_runner and runner is not None:
            runner.close()

