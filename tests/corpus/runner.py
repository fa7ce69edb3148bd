"""Run corpus cases: convert each broken input and judge the outcome against its expectation.

A fixable case passes when the conversion succeeds, reports its notice codes
(in the report and in model.json's ``userDefinedMetadata``), and the model
predicts like JAX in real TF.js. An error case passes when the conversion
raises a :class:`~topology.vocabulary.errors.ConversionError` with the expected code, a
message naming what it must, a hint, and leaves every file around it exactly
as it was (the output folder included).
"""
from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests import flax_models as fm
from tests.corpus.cases import FIXED, Case
from writer.convert import ConvertOptions, convert
from topology.vocabulary.errors import ConversionError

RTOL = 1e-5  # as tests/conftest.py: relative to max(1, max|expected|)
SENTINEL = "group1-shard1of1.bin"  # with a model.json: an earlier conversion, which --force may replace


@dataclass
class Outcome:
    """What happened to one case.

    Example:
        >>> Outcome("nested-params", True, "fixed", "").line()
        'ok    nested-params: fixed'
    """

    name: str
    ok: bool
    got: str  # "fixed", an error code, or "INTERNAL" for any other exception
    detail: str
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)  # rendered warnings, fixes and assumptions
    error: str = ""  # the rendered error, for error outcomes

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL':5} {self.name}: {self.got}" + (f" ({self.detail})" if self.detail else "")


def run_case(case: Case, folder: Path, tfjs: Any) -> Outcome:
    """Build ``case`` in ``folder`` (empty), convert it, and judge the outcome.

    Example:
        >>> outcome = run_case(by_name("nested-params"), Path(tmp), tfjs)   # doctest: +SKIP
        >>> outcome.ok                                                      # doctest: +SKIP
        True
    """
    started = time.perf_counter()
    outcome = _run(case, folder, tfjs)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _run(case: Case, folder: Path, tfjs: Any) -> Outcome:
    try:
        built = case.build(folder)
    except Exception as exc:  # noqa: BLE001  a broken case, reported as such
        return Outcome(case.name, False, "BUILD_FAILED", f"{type(exc).__name__}: {exc}")
    out, extra = _prepare_output(case, folder)
    before = _snapshot(folder)
    try:
        options = ConvertOptions(**{**built.options, **extra})
        report = convert(built.source, out, options, module=built.module, variables=built.variables)
    except ConversionError as err:
        return _judge_error(case, built, err, before, _snapshot(folder))
    except Exception as exc:  # noqa: BLE001  anything else is an internal fault: never acceptable
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return Outcome(case.name, False, "INTERNAL",
                       f"{type(exc).__name__}: {str(exc)[:200]} at {Path(where.filename).name}:{where.lineno}")
    return _judge_converted(case, built, report, out, tfjs)


def _prepare_output(case: Case, folder: Path) -> tuple[Path, dict]:
    out = folder / "out"
    if case.out == "file":
        out.write_text("not a folder")
        return out, {}
    if case.out.startswith("sentinel"):
        out.mkdir()
        (out / SENTINEL).write_text("the user's previous conversion")
        (out / "model.json").write_text(json.dumps({"userDefinedMetadata": {"flax2tfjs": {"version": "0"}}}))
        return out, ({} if case.out.endswith("no-force") else {"force": True})
    return out, {}


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under ``folder``: kind, size, modification time and (small files) content."""
    state = {}
    for path in sorted(folder.rglob("*")):
        stat = path.stat()
        content = path.read_bytes() if path.is_file() and stat.st_size < 1 << 16 else None
        state[str(path.relative_to(folder))] = (path.is_dir(), stat.st_size, stat.st_mtime_ns, content)
    return state


def _judge_error(case: Case, built: Any, err: ConversionError, before: dict, after: dict) -> Outcome:
    notes = []
    if case.fixable:
        notes.append(f"expected a fixed conversion: {err.render()}")
    elif err.code != case.expect:
        notes.append(f"expected {case.expect}: {err.render()}")
    if not err.message.strip() or not err.hint.strip():
        notes.append("message or hint is empty")
    rendered = err.render().splitlines()
    if not rendered[0].startswith(f"error[{err.code}]: ") or not rendered[-1].startswith("hint: "):
        notes.append(f"badly rendered: {err.render()!r}")
    notes += [f"message does not name {text!r}: {err.message}" for text in built.message_has if text not in err.message]
    if before != after:
        changed = sorted(set(before) ^ set(after) | {k for k in before if k in after and before[k] != after[k]})
        notes.append(f"files changed on error: {', '.join(changed[:5])}")
    return Outcome(case.name, not notes, err.code, "; ".join(notes), error=err.render())


def _judge_converted(case: Case, built: Any, report: Any, out: Path, tfjs: Any) -> Outcome:
    codes = [n.code for n in report.notices]
    rendered = [n.render() for n in report.notices]
    if not case.fixable:
        return Outcome(case.name, False, "fixed", f"expected error {case.expect}, but it converted", notices=rendered)
    notes = [f"no {code} notice (got {', '.join(codes) or 'none'})" for code in case.codes if code not in codes]
    metadata = json.loads((out / "model.json").read_text())["userDefinedMetadata"]["flax2tfjs"]["notices"]
    recorded = [n["code"] for n in metadata]
    notes += [f"{code} missing from userDefinedMetadata" for code in case.codes if code not in recorded]
    x = fm.inputs(built.input_shape, batch=3, seed=2)
    if built.input_ids:
        x = np.random.RandomState(2).randint(0, built.input_ids, (3, *built.input_shape)).astype(np.int32)
    expected = np.asarray(built.reference(x))
    actual = tfjs.predict(out, [x]).outputs[0]
    if actual.shape != expected.shape:
        notes.append(f"TF.js output shape {actual.shape} != JAX {expected.shape}")
    else:
        diff = float(np.max(np.abs(actual.astype(np.float64) - expected)))
        bound = RTOL * max(1.0, float(np.max(np.abs(expected))))
        if not diff <= bound:
            notes.append(f"TF.js differs from JAX by {diff:.3g} (> {bound:.3g})")
    return Outcome(case.name, not notes, FIXED, "; ".join(notes), notices=rendered)


def rates(outcomes: list[Outcome], cases: list[Case]) -> dict[str, Any]:
    """Fix rate over fixable cases and clear-error rate over the others.

    Example:
        >>> rates([], [])["fixable"]
        0
    """
    fixable = {c.name for c in cases if c.fixable}
    fixed = sum(1 for o in outcomes if o.name in fixable and o.ok)
    errors = sum(1 for o in outcomes if o.name not in fixable and o.ok)
    n_fix, n_err = len(fixable), len(cases) - len(fixable)
    return {
        "cases": len(cases), "fixable": n_fix, "fixed": fixed, "errors": n_err, "clear_errors": errors,
        "fix_rate": fixed / n_fix if n_fix else 1.0, "clear_error_rate": errors / n_err if n_err else 1.0,
    }
