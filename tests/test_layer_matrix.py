"""Every layer kind and op family's own test cases, converted and run in real TF.js against JAX.

Cases are declared next to the mapping they test (``cases`` of each
``topology/layers/*.py`` kind, ``CASES`` of each ``topology/ops/*.py`` family).
Variables are randomised (BatchNorm variances kept positive) so that every
weight matters; each case runs with batch 1 and batch 3.
"""
from __future__ import annotations

import pytest

from tests.jax_reference import case_inputs, case_shapes, compare_batches, prepare, write_results
from topology.layers import REGISTRY
from topology.ops import families
from writer import to_tensorflowjs

RESULTS: dict[str, float] = {}


def _all_cases():
    cases = []
    for kind in REGISTRY.values():
        cases += [(f"{kind.key}:{case.name}", case) for case in kind.cases()]
    for family, module in families().items():
        cases += [(f"{family}:{case.name}", case) for case in module.CASES()]
    return cases


CASES = _all_cases()


@pytest.mark.parametrize("case_id, case", CASES, ids=[c[0] for c in CASES])
def test_case_matches_jax_in_tfjs(tmp_path, tfjs, case_id, case):
    module, variables, run_jax = prepare(case)
    shapes = case_shapes(case)
    to_tensorflowjs(module, tmp_path / "out", variables=variables,
                    input_shape=shapes if len(shapes) > 1 else shapes[0], input_dtype=case.input_dtype)
    RESULTS[case_id] = compare_batches(tfjs, tmp_path / "out", run_jax, lambda batch: case_inputs(case, batch, batch))


def test_zz_write_matrix_results():
    """Keep the largest difference per case for the docs (runs after the matrix)."""
    write_results(RESULTS, "layer_matrix", "matrix")
