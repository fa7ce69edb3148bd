"""Shared fixtures: one real TF.js (Node) process per test session, and comparison helpers."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Conversions check model.json with a few built-in rules; in tests also against the JSON schema.
os.environ.setdefault("FLAX2TFJS_SCHEMA_CHECK", "1")
# An undeclared error or notice code fails loudly (topology/vocabulary/codes.py), here and in the CLI runs tests start.
os.environ.setdefault("FLAX2TFJS_CHECK_CODES", "1")

# float32 sums in a different order: differences of a few ulps, scaled by the output size.
RTOL = 1e-5


@pytest.fixture(scope="session")
def tfjs():
    """A real @tensorflow/tfjs 4.22 runtime in Node, started once."""
    from writer.tfjs_node import TfjsRunner

    with TfjsRunner() as runner:
        yield runner


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL) -> float:
    """Assert |actual - expected| <= rtol * max(1, max|expected|) everywhere; return the max difference."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected))) if expected.size else 0.0
    bound = rtol * max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    assert diff <= bound, f"max abs difference {diff:.3g} > {bound:.3g}"
    return diff


def predict_tfjs(tfjs, out_dir: Path, x: np.ndarray, backend: str = "cpu") -> np.ndarray:
    result = tfjs.predict(out_dir, [x], backend=backend)
    assert len(result.outputs) == 1
    return result.outputs[0]
