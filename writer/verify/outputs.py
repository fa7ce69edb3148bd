"""The comparison of TF.js's outputs with the reference's: error metrics, top-1 agreement, accuracy."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from writer.term import shape_text
from writer.verify.report import VerificationFailed, finite_or_none


def compare(tfjs: Sequence[np.ndarray], reference: Sequence[np.ndarray], labels: np.ndarray | None) -> dict:
    """Error metrics between TF.js and JAX outputs (and accuracy against ``labels``).

    Example:
        >>> m = compare([np.array([[0.0, 2.0]])], [np.array([[0.0, 1.5]])], np.array([1]))
        >>> m["max_abs_error"], m["top1_agreement"], m["accuracy"]
        (0.5, 1.0, 1.0)
    """
    if len(tfjs) != len(reference) or any(a.shape != b.shape for a, b in zip(tfjs, reference)):
        raise VerificationFailed(
            "VERIFY_OUTPUT_MISMATCH",
            f"TF.js outputs {[shape_text(a.shape) for a in tfjs]} but JAX outputs {[shape_text(b.shape) for b in reference]}",
            "the model.json does not belong to this checkpoint/module; reconvert")
    # A NaN (or same-signed inf) where JAX has the same value is agreement, not a fault of the conversion
    # (e.g. take_along_axis of an out-of-range position fills NaN in JAX and in the converted model).
    same = [(np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b)) for a, b in zip(tfjs, reference)]
    nonfinite = int(sum(int(np.count_nonzero(~np.isfinite(a) & ~m)) for a, m in zip(tfjs, same)))
    with np.errstate(all="ignore"):
        diffs = [np.where(m, 0.0, np.abs(a.astype(np.float64) - b.astype(np.float64)))
                 for a, b, m in zip(tfjs, reference, same)]
    max_abs = max((float(np.max(d)) if d.size else 0.0) for d in diffs)
    if nonfinite or not np.isfinite(max_abs):
        max_abs = float("inf")
    total = sum(d.size for d in diffs)
    with np.errstate(all="ignore"):
        mse = float(sum(float(np.sum(d * d)) for d in diffs) / max(1, total))
    scale = max(1.0, max((float(np.max(np.abs(b[np.isfinite(b)]))) if np.isfinite(b).any() else 0.0)
                         for b in reference))
    worst = None
    for index, d in enumerate(diffs):
        if d.size:
            flat = int(np.nanargmax(np.where(np.isnan(d), np.inf, d)))
            where = np.unravel_index(flat, d.shape)
            value = float(np.where(np.isnan(d), np.inf, d)[where])
            if worst is None or value > worst["diff"]:
                worst = {"sample": int(where[0]), "output": index, "index": [int(i) for i in where[1:]],
                         "tfjs": finite_or_none(float(tfjs[index][where])), "jax": float(reference[index][where]),
                         "diff": value}
    if worst is not None:
        worst["diff"] = finite_or_none(worst["diff"])
    first_t, first_r = tfjs[0], reference[0]
    classifier = first_r.ndim >= 2 and first_r.shape[-1] > 1  # class scores on the last axis
    top1 = accuracy = ref_accuracy = None
    if classifier and first_r.size:
        pred_t = np.argmax(np.nan_to_num(first_t, nan=-np.inf), -1)  # every position (sequences too)
        pred_r = np.argmax(first_r, -1)
        top1 = float(np.mean(pred_t == pred_r))
        if labels is not None and pred_r.shape == labels.shape:
            accuracy = float(np.mean(pred_t == labels))
            ref_accuracy = float(np.mean(pred_r == labels))
    return {"max_abs_error": max_abs, "mse": mse if np.isfinite(mse) else float("inf"), "scale": scale,
            "top1_agreement": top1, "accuracy": accuracy, "reference_accuracy": ref_accuracy,
            "nonfinite_outputs": nonfinite, "worst": worst}

