"""What a verification found: :class:`VerifyReport` (rendered for people, JSON for scripts), the
weight mismatches, and :class:`VerificationFailed` for a model that fails outright."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from topology.vocabulary.errors import ConversionError, Notice
from writer.report import render_rewrites
from writer.term import Style, human_bytes, shape_text, table


class VerificationFailed(ConversionError):
    """The converted model could not even be run in TF.js: a failed verification (exit status 1).

    Example:
        >>> VerificationFailed("TFJS_FAILED", "out/model.json: ...", "reconvert").exit_status
        1
    """

    exit_status = 1



@dataclass
class WeightMismatch:
    """A weight whose bytes in the shards differ from what the checkpoint gives."""

    name: str
    problem: str  # "differs" | "missing" | "unexpected" | "shape" | "truncated"
    differing: int = 0
    size: int = 0
    max_abs_diff: float | None = None

    def render(self) -> str:
        if self.problem == "differs":
            diff = "" if self.max_abs_diff is None else f" (max |diff| {metric_text(self.max_abs_diff)})"
            return f"{self.name}: {self.differing:,} of {self.size:,} values differ from the checkpoint{diff}"
        return f"{self.name}: {self.problem}"

    def to_json(self) -> dict:
        return {"name": self.name, "problem": self.problem, "differing": self.differing, "size": self.size,
                "max_abs_diff": finite_or_none(self.max_abs_diff)}


@dataclass
class VerifyReport:
    """The outcome of one verification; :meth:`render` for people, :meth:`to_json` for scripts."""

    model_dir: Path
    checkpoint: Path
    reference: str  # "module" | "template"
    reference_description: str
    backend: str
    input_source: str  # "random" | "data"
    data_path: Path | None
    seed: int | None
    samples: int
    input_shapes: list[list]
    output_shapes: list[list]
    max_abs_error: float
    mse: float
    scale: float
    tolerance: float
    top1_agreement: float | None
    accuracy: float | None
    reference_accuracy: float | None
    load_ms: float
    predict_ms: float
    predict_runs: int
    batch_predict_ms: float
    model_bytes: int
    weights_checked: int
    weight_mismatches: list[WeightMismatch]
    nonfinite_outputs: int
    worst: dict | None
    tfjs_version: str
    seconds: float = 0.0
    notices: list[Notice] = field(default_factory=list)
    batch_size: int = 256  # samples per TF.js / JAX call
    optimized: bool = False  # model.json says --optimize rewrote the graph
    rewrites: list[dict] = field(default_factory=list)  # the rewrites it lists

    @property
    def failures(self) -> list[str]:
        """Why the verification failed (empty when it passed)."""
        reasons = []
        if self.nonfinite_outputs:
            reasons.append(f"TF.js produced {self.nonfinite_outputs:,} NaN/Inf output values")
        if not self.max_abs_error <= self.tolerance * self.scale:
            reasons.append(f"max abs error {metric_text(self.max_abs_error)} exceeds the tolerance "
                           f"{metric_text(self.tolerance * self.scale)} ({self.tolerance:g} x scale {metric_text(self.scale)})")
        if self.weight_mismatches:
            reasons.append(f"{len(self.weight_mismatches)} weight(s) in the shards differ from the checkpoint")
        return reasons

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict:
        return {
            "passed": self.passed, "failures": self.failures,
            "model_dir": str(self.model_dir), "checkpoint": str(self.checkpoint),
            "reference": self.reference, "reference_description": self.reference_description,
            "backend": self.backend, "tfjs_version": self.tfjs_version,
            "inputs": {"source": self.input_source, "path": None if self.data_path is None else str(self.data_path),
                       "seed": self.seed, "samples": self.samples, "shapes": self.input_shapes},
            "output_shapes": self.output_shapes,
            "max_abs_error": finite_or_none(self.max_abs_error), "mse": finite_or_none(self.mse),
            "scale": self.scale, "tolerance": self.tolerance,
            "top1_agreement": self.top1_agreement, "accuracy": self.accuracy,
            "reference_accuracy": self.reference_accuracy,
            "nonfinite_outputs": self.nonfinite_outputs, "worst": self.worst,
            "load_ms": round(self.load_ms, 3), "predict_ms": round(self.predict_ms, 3),
            "predict_runs": self.predict_runs, "batch_predict_ms": round(self.batch_predict_ms, 3),
            "batch_size": self.batch_size,
            "model_bytes": self.model_bytes,
            "weights": {"checked": self.weights_checked, "mismatches": [m.to_json() for m in self.weight_mismatches]},
            "notices": [n.to_json() for n in self.notices], "seconds": round(self.seconds, 3),
            "optimize": {"enabled": self.optimized, "rewrites": self.rewrites},
        }

    def render(self, style: Style | None = None) -> str:
        """A concise aligned report ending in PASS or FAIL."""
        s = style or Style(enabled=False)
        where = (f"{self.samples:,} samples from {self.data_path}" if self.input_source == "data"
                 else f"{self.samples:,} random samples (seed {self.seed})")
        lines = [f"{s.bold('verify')} {self.model_dir} against {self.checkpoint}",
                 f"  reference: {self.reference_description}",
                 f"  TF.js {self.tfjs_version} ({self.backend} backend, Node) on {where}, "
                 f"input {', '.join(shape_text(sh) for sh in self.input_shapes)}"]
        tol = self.tolerance * self.scale
        ok = self.max_abs_error <= tol and not self.nonfinite_outputs
        rows = [("metric", "value", "")]
        rows.append(("max abs error", metric_text(self.max_abs_error),
                     f"{'<=' if ok else '>'} {metric_text(tol)} tolerance ({self.tolerance:g} x {metric_text(self.scale)})"))
        rows.append(("mean squared error", metric_text(self.mse), ""))
        if self.top1_agreement is not None:
            rows.append(("top-1 agreement", f"{self.top1_agreement:.2%}", "TF.js arg-max == JAX arg-max"))
        if self.accuracy is not None:
            ref = f"JAX {self.reference_accuracy:.2%}" if self.reference_accuracy is not None else ""
            rows.append(("accuracy (TF.js)", f"{self.accuracy:.2%}", ref))
        if self.weights_checked:
            rows.append(("weights checked", f"{self.weights_checked - len(self.weight_mismatches)}/{self.weights_checked}",
                         ("byte-identical to the checkpoint" + (" (folded ones: as --optimize computes them)"
                                                                if self.optimized and self.rewrites else ""))
                         if not self.weight_mismatches else "MISMATCH"))
        rows.append(("TF.js load", f"{self.load_ms:.1f} ms", "read model.json + shards, build the model"))
        rows.append(("predict latency", f"{self.predict_ms:.2f} ms", f"median of {self.predict_runs} batch-1 runs"))
        rows.append(("batch predict", f"{self.batch_predict_ms:.1f} ms",
                     f"{min(self.samples, self.batch_size):,} samples per call"))
        rows.append(("model size", human_bytes(self.model_bytes), "model.json + shards"))
        lines.append(table(rows, right={1}, indent="  "))
        for mismatch in self.weight_mismatches[:10]:
            lines.append("  " + s.red("weight ") + mismatch.render())
        if len(self.weight_mismatches) > 10:
            lines.append(f"  ... {len(self.weight_mismatches) - 10} more weights differ")
        if self.worst is not None and not self.passed:
            lines.append(f"  worst difference: sample {self.worst['sample']}, output {self.worst['output']} "
                         f"{self.worst['index']}: TF.js {metric_text(self.worst['tfjs'])} vs JAX {metric_text(self.worst['jax'])}")
        if self.optimized and self.rewrites:  # nothing to say when no rewrite applied
            lines.append(f"  optimized graph: {len(self.rewrites)} rewrite(s), rebuilt the same way for the "
                         "weight check; JAX runs the original model")
            lines += render_rewrites(self.rewrites, indent="    ")
        assumed = [n.code for n in self.notices if n.kind == "assumption"]
        for notice in self.notices:
            if notice.kind != "assumption":
                lines.append("  " + (s.yellow(notice.render()) if notice.kind == "warning" else notice.render()))
        if assumed:
            lines.append(f"  the reference makes the conversion's assumptions: {', '.join(assumed)} "
                         "(listed by inspect)")
        if self.passed:
            lines.append(s.green("PASS") + f" in {self.seconds:.1f} s")
        else:
            lines.append(s.red("FAIL") + ": " + "; ".join(self.failures))
        return "\n".join(lines)


def finite_or_none(value: float | None) -> float | None:
    """``value`` when it is a finite number, else None (JSON has no NaN or Infinity).

    Example:
        >>> finite_or_none(0.5), finite_or_none(float("inf"))
        (0.5, None)
    """
    return value if value is not None and np.isfinite(value) else None


def metric_text(value: float | None) -> str:
    """A metric in a report: 4 significant digits, 3 in scientific notation for tiny or huge values.

    Example:
        >>> metric_text(0.5), metric_text(2e-7), metric_text(float("inf")), metric_text(None)
        ('0.5', '2e-07', 'inf', 'nan')
    """
    if value is None or not np.isfinite(value):
        return "inf" if value is not None and value > 0 else "nan"
    return f"{value:.3g}" if value and (abs(value) < 1e-3 or abs(value) >= 1e4) else f"{value:.4g}"
