"""The ``export-savedmodel`` command: a TensorFlow SavedModel built from our model.json (optional path).

TensorFlow is not a dependency of flax2tfjs. The export runs a small worker
(:mod:`writer.commands.export.worker`, ``python -I writer/commands/export/worker.py --worker JOB``: isolated,
so nothing of this environment leaks into TensorFlow's) in an interpreter that has
TensorFlow with Keras 2 (``tf_keras``, or ``tf.keras`` before TF 2.16): the
current one if it can import tensorflow, else ``--tf-python``, else
``$FLAX2TFJS_TF_PYTHON``, else, in a source checkout, the repository's ``.venv-tfjs``
(made by ``scripts/setup_tfjs_venv.sh``). The worker builds the Keras model from
``modelTopology`` (``model_from_json``), loads the weights from the shards by
``<layer>/<weight>`` name (:mod:`writer.tfjs_files`, dequantizing as tfjs does), saves the SavedModel,
reloads it with ``tf.saved_model.load`` and runs its ``serving_default``
signature on the inputs it was given. The parent compares those outputs with
the original in JAX (``--checkpoint``) or, without one, with real TF.js.

The SavedModel is written to a staging folder and moved into place only when
the outputs match.

Example:
    >>> report = export_savedmodel("out/", "saved/", checkpoint="examples/mnist_ckpt")  # doctest: +SKIP
    >>> report.passed                                                                   # doctest: +SKIP
    True
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from topology.vocabulary.errors import ConversionError, Notices
from writer.output import check_destination, staged_output
from writer.term import Style, human_bytes, table
from writer.tfjs_node import TfjsError, TfjsRunner
from writer.verify import (DEFAULT_TOLERANCE, ModelFiles, VerificationFailed, VerifyOptions, build_reference,
                           compare, finite_or_none, metric_text, random_inputs, read_model)

WORKER_FILE = Path(__file__).resolve().with_name("worker.py")  # run by path, isolated
PACKAGE_PARENT = Path(__file__).resolve().parents[3]  # holds the `writer` package (writer/commands/export/ here)
TF_VENV_PYTHON = PACKAGE_PARENT / ".venv-tfjs" / "bin" / "python"
_INSTALL_HINT = ("install the extra: pip install 'flax2tfjs[tensorflow]' (tensorflow and tf-keras), or give an "
                 "interpreter that has them with --tf-python, e.g. python -m venv tfenv && tfenv/bin/pip install "
                 "tensorflow tf-keras, then --tf-python tfenv/bin/python (in a flax2tfjs checkout, "
                 "bash scripts/setup_tfjs_venv.sh makes .venv-tfjs)")


@dataclass
class ExportReport:
    """What ``export-savedmodel`` did and how the SavedModel's outputs compare."""

    model_dir: Path
    saved_dir: Path
    python: str
    tensorflow_version: str
    keras_version: str
    signature: str
    compared_with: str  # "jax" | "tfjs"
    comparison: str  # description of the other side
    samples: int
    max_abs_error: float
    mse: float
    scale: float
    tolerance: float
    top1_agreement: float | None
    saved_bytes: int
    seconds: float = 0.0
    written: bool = True
    notices: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.max_abs_error <= self.tolerance * self.scale

    def to_json(self) -> dict:
        return {
            "passed": self.passed, "written": self.written, "model_dir": str(self.model_dir),
            "saved_dir": str(self.saved_dir), "python": self.python,
            "tensorflow_version": self.tensorflow_version, "keras_version": self.keras_version,
            "signature": self.signature, "compared_with": self.compared_with, "comparison": self.comparison,
            "samples": self.samples, "max_abs_error": finite_or_none(self.max_abs_error),
            "mse": finite_or_none(self.mse), "scale": self.scale, "tolerance": self.tolerance,
            "top1_agreement": self.top1_agreement, "saved_bytes": self.saved_bytes,
            "notices": [n.to_json() for n in self.notices], "seconds": round(self.seconds, 3),
        }

    def render(self, style: Any = None) -> str:
        s = style or Style(enabled=False)
        verb = "exported" if self.written else "did NOT export"
        lines = [f"{s.bold(verb)} {self.model_dir} -> {self.saved_dir} (SavedModel, signature {self.signature})",
                 f"  TensorFlow {self.tensorflow_version}, Keras {self.keras_version} ({self.python})",
                 f"  compared with {self.comparison} on {self.samples} random samples"]
        tol = self.tolerance * self.scale
        rows = [("metric", "value", ""),
                ("max abs error", metric_text(self.max_abs_error),
                 f"{'<=' if self.passed else '>'} {metric_text(tol)} tolerance ({self.tolerance:g} x {metric_text(self.scale)})"),
                ("mean squared error", metric_text(self.mse), "")]
        if self.top1_agreement is not None:
            rows.append(("top-1 agreement", f"{self.top1_agreement:.2%}", ""))
        if self.written:
            rows.append(("SavedModel size", human_bytes(self.saved_bytes), ""))
        lines.append(table(rows, right={1}, indent="  "))
        lines += ["  " + n.render() for n in self.notices if n.kind != "assumption" or n.code == "COMPARED_WITH_TFJS"]
        assumed = [n.code for n in self.notices if n.kind == "assumption" and n.code != "COMPARED_WITH_TFJS"]
        if assumed:
            lines.append(f"  the reference makes the conversion's assumptions: {', '.join(assumed)} (listed by inspect)")
        lines.append(s.green("PASS") + f" in {self.seconds:.1f} s" if self.passed
                     else s.red("FAIL") + ": the SavedModel's outputs differ; nothing was written")
        return "\n".join(lines)


def find_tensorflow_python(explicit: str | Path | None = None) -> str:
    """The interpreter to run the export in (see the module docstring for the order).

    Raises ConversionError ``TENSORFLOW_NOT_INSTALLED`` when there is none.

    Example:
        >>> find_tensorflow_python("/nonexistent/python")   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: TENSORFLOW_NOT_INSTALLED: ...
    """
    if explicit is not None:
        if not Path(explicit).is_file():
            raise ConversionError("TENSORFLOW_NOT_INSTALLED", f"--tf-python {explicit} does not exist", _INSTALL_HINT)
        return str(explicit)
    if importlib.util.find_spec("tensorflow") is not None:
        return sys.executable
    env = os.environ.get("FLAX2TFJS_TF_PYTHON")
    if env and Path(env).is_file():
        return env
    if TF_VENV_PYTHON.is_file():
        return str(TF_VENV_PYTHON)
    raise ConversionError(
        "TENSORFLOW_NOT_INSTALLED",
        f"export-savedmodel needs TensorFlow, which {sys.executable} cannot import, and no .venv-tfjs was found",
        _INSTALL_HINT)


def export_savedmodel(model_dir: str | Path, saved_dir: str | Path, *, checkpoint: str | Path | None = None,
                      options: VerifyOptions | None = None, force: bool = False, tf_python: str | Path | None = None,
                      samples: int = 16, seed: int = 0, tolerance: float | None = None,
                      timeout: float = 900.0) -> ExportReport:
    """Build, save and check a SavedModel of ``model_dir``; ``options`` is a :class:`writer.verify.VerifyOptions`.

    Example:
        >>> export_savedmodel("out", "saved", checkpoint="examples/mnist_ckpt", force=True)   # doctest: +SKIP
    """
    started = time.perf_counter()
    options = options or VerifyOptions()
    if samples < 1:
        raise ConversionError("BAD_OPTION", f"--samples {samples}", "give a positive number of samples")
    model = read_model(model_dir)
    saved_dir = Path(saved_dir)
    check_destination(saved_dir, force, Path(model_dir), savedmodel_foreign_entry)
    python = find_tensorflow_python(tf_python)
    xs = random_inputs(model.inputs, samples, seed, model.document)
    notices = Notices()
    expected, comparison, kind = _expected_outputs(model, xs, checkpoint, options, notices)
    with tempfile.TemporaryDirectory(prefix="flax2tfjs-savedmodel-") as work:
        work = Path(work)
        inputs = []
        for i, x in enumerate(xs):
            np.save(work / f"x{i}.npy", x)
            inputs.append(str(work / f"x{i}.npy"))
        try:
            with staged_output(saved_dir, force, Path(model_dir), savedmodel_foreign_entry) as staging:
                # Absolute paths: the worker runs in another folder.
                job = {"model_dir": str(model.folder.resolve()), "saved_dir": str(Path(staging).resolve()), "inputs": inputs,
                       "outputs": str(work / "y")}
                result = _run_worker(python, job, timeout)
                got = [np.load(p) for p in result["outputs"]]
                metrics = compare(got, expected, None)
                tol = tolerance if tolerance is not None else DEFAULT_TOLERANCE[model.quantization]
                report = ExportReport(
                    model.folder, saved_dir, python, result["tensorflow"], result["keras"], result["signature"],
                    kind, comparison, samples, metrics["max_abs_error"], metrics["mse"], metrics["scale"], tol,
                    metrics["top1_agreement"], _folder_bytes(staging), notices=list(notices.items))
                if not report.passed:
                    raise _NotWritten(report)
        except _NotWritten as stop:  # staged_output removed the staging folder
            stop.report.written = False
            stop.report.seconds = time.perf_counter() - started
            return stop.report
    report.seconds = time.perf_counter() - started
    return report


class _NotWritten(Exception):
    def __init__(self, report: ExportReport) -> None:
        super().__init__("outputs differ")
        self.report = report


_SAVEDMODEL_FILES = {"saved_model.pb", "fingerprint.pb", "keras_metadata.pb"}


def savedmodel_foreign_entry(folder: Path, skip: frozenset = frozenset()) -> Path | None:
    """The first entry of ``folder`` that is not part of a SavedModel (what ``--force`` may replace), or None.

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "notes.txt").write_text("x")
        >>> savedmodel_foreign_entry(d).name
        'notes.txt'
    """
    entries = sorted(p for p in folder.iterdir() if p.name not in skip)
    if entries and not (folder / "saved_model.pb").is_file():
        return entries[0]
    for entry in entries:
        if entry.is_symlink():
            return entry
        if entry.name in _SAVEDMODEL_FILES and entry.is_file():
            continue
        if entry.name == "variables" and entry.is_dir():
            inner = [p for p in entry.iterdir() if p.is_symlink() or not p.is_file()
                     or not (p.name == "variables.index" or p.name.startswith("variables.data-"))]
            if inner:
                return inner[0]
            continue
        if entry.name == "assets" and entry.is_dir():
            inner = [p for p in entry.iterdir()]
            if inner:
                return inner[0]
            continue
        return entry
    return None


def _expected_outputs(model: ModelFiles, xs: list, checkpoint: str | Path | None, options: VerifyOptions,
                      notices: Notices) -> tuple[list, str, str]:
    """The outputs to compare with: JAX on the checkpoint when given, else real TF.js."""
    if checkpoint is not None:
        opened: list = []
        try:
            reference = build_reference(checkpoint, model, options, notices, opened)
            return reference.run(xs), f"JAX: {reference.description}", "jax"
        finally:
            for source in opened:
                source.close()
    notices.assume("COMPARED_WITH_TFJS", "no --checkpoint: the SavedModel is compared with TF.js running model.json, "
                                         "not with the original in JAX")
    try:
        with TfjsRunner() as runner:
            return runner.predict(model.folder, xs, backend=options.backend).outputs, \
                f"TF.js {options.backend} (Node) running model.json", "tfjs"
    except TfjsError as exc:
        raise VerificationFailed("TFJS_FAILED", f"TF.js could not load or run {model.folder / 'model.json'}: "
                                                f"{exc.message}", "reconvert into a fresh folder") from None


def _run_worker(python: str, job: dict, timeout: float) -> dict:
    # -I: no PYTHONPATH, no user site, not even this file's folder on sys.path, so the other
    # interpreter imports its own numpy and TensorFlow, never this environment's packages.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONHOME", None)
    try:
        proc = subprocess.run([python, "-I", str(WORKER_FILE), "--worker", json.dumps(job)], env=env,
                              capture_output=True, text=True, timeout=timeout, cwd=str(Path(job["saved_dir"]).parent))
    except subprocess.TimeoutExpired:
        raise ConversionError("SAVEDMODEL_FAILED", f"the TensorFlow worker ({python}) did not finish within {timeout:g} s",
                              "try again on a less loaded machine") from None
    except OSError as exc:
        raise ConversionError("TENSORFLOW_NOT_INSTALLED", f"cannot run {python} ({exc.strerror})", _INSTALL_HINT) from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else None
    if result is None or not result.get("ok"):
        error = result.get("error") if result else None
        if result and result.get("code") == "TENSORFLOW_NOT_INSTALLED":
            raise ConversionError("TENSORFLOW_NOT_INSTALLED", f"{python}: {error}", _INSTALL_HINT)
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise ConversionError("SAVEDMODEL_FAILED",
                              f"building the SavedModel with {python} failed: {error or 'exit status ' + str(proc.returncode)}"
                              + (f"\n{tail}" if tail and not error else ""),
                              "the model.json may use a layer tf-keras lacks; rerun with --debug and report it")
    return result


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
