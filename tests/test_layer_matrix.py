"""Every layer kind and op family's own test cases, converted and run in real TF.js against JAX.

Cases are declared next to the mapping they test (``cases`` of each
``topology/layers/*.py`` kind, ``CASES`` of each ``topology/ops/*.py`` family).
Variables are randomised (BatchNorm variances kept positive) so that every
weight matters; each case runs with batch 1 and batch 3.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import ROOT, assert_close
from topology.layers import REGISTRY
from topology.ops import families
from topology.trace.capture import inference_kwargs
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


def _shapes(case):
    shape = case.input_shape
    return [tuple(shape)] if all(isinstance(d, int) for d in shape) else [tuple(s) for s in shape]


def _inputs(case, batch, seed=0):
    rng = np.random.RandomState(seed)
    low, high = case.input_range
    if case.input_dtype == "int32":
        return [rng.randint(int(low), int(high), (batch, *s)).astype(np.int32) for s in _shapes(case)]
    return [rng.uniform(low, high, (batch, *s)).astype(np.float32) for s in _shapes(case)]


def _randomize(tree, seed=1):
    rng = np.random.RandomState(seed)

    def draw(path, leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):  # NNX rng streams (e.g. nnx.Dropout)
            return leaf
        leaf = np.asarray(leaf)
        if not np.issubdtype(leaf.dtype, np.floating):
            return leaf
        value = rng.normal(0, 0.5, leaf.shape).astype(leaf.dtype)
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        name = next((n for n in reversed(names) if n != "value"), "")  # NNX state paths end in .value
        return np.abs(value) + 0.5 if name in ("var", "variance") else value

    return jax.tree_util.tree_map_with_path(draw, tree)


def _is_nnx(module):
    return any(c.__module__.startswith("flax.nnx") and c.__name__ == "Module" for c in type(module).__mro__)


def _prepare(case):
    module = case.build()
    example = [jnp.asarray(x) for x in _inputs(case, 1)]
    if _is_nnx(module):
        from flax import nnx

        graphdef, state = nnx.split(module)
        nnx.update(module, _randomize(state))
        module.eval()
        return module, None, lambda xs: np.asarray(module(*[jnp.asarray(x) for x in xs]))
    variables = _randomize(jax.tree_util.tree_map(np.asarray, module.init(jax.random.PRNGKey(0), *example)))
    flags = inference_kwargs(type(module).__call__)
    return module, variables, lambda xs: np.asarray(module.apply(variables, *[jnp.asarray(x) for x in xs], **flags))


@pytest.mark.parametrize("case_id, case", CASES, ids=[c[0] for c in CASES])
def test_case_matches_jax_in_tfjs(tmp_path, tfjs, case_id, case):
    module, variables, run_jax = _prepare(case)
    shapes = _shapes(case)
    to_tensorflowjs(module, tmp_path / "out", variables=variables,
                    input_shape=shapes if len(shapes) > 1 else shapes[0], input_dtype=case.input_dtype)
    worst = 0.0
    for batch in (1, 3):
        xs = _inputs(case, batch, seed=batch)
        result = tfjs.predict(tmp_path / "out", xs)
        assert len(result.outputs) == 1
        worst = max(worst, assert_close(result.outputs[0], run_jax(xs)))
    RESULTS[case_id] = worst


def test_zz_write_matrix_results():
    """Keep the largest difference per case for the docs (runs after the matrix)."""
    if not RESULTS:
        pytest.skip("matrix did not run")
    folder = ROOT / "test-artifacts"
    folder.mkdir(exist_ok=True)
    (folder / "layer_matrix.json").write_text(json.dumps(RESULTS, indent=1, sort_keys=True))
    assert all(np.isfinite(v) for v in RESULTS.values())
