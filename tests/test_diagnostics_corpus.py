"""Every broken input of the diagnostics corpus is fixed (and predicts like JAX in TF.js) or stops clearly."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests import flax_models as fm
from tests.conftest import ROOT
from tests.corpus import models as M
from tests.corpus.cases import CASES, FIXED, by_name
from tests.corpus.runner import run_case
from writer import to_tensorflowjs
from topology.vocabulary.errors import ConversionError
from writer.fixes import REGISTRY

# The failures the issue names as "must be a clear error", by the code each must give.
REQUIRED_ERRORS = {
    "TRUNCATED_CHECKPOINT", "CORRUPT_CHECKPOINT", "EMPTY_CHECKPOINT", "NOT_A_CHECKPOINT", "PICKLE_REFUSED",
    "NONFINITE_WEIGHT", "MISSING_PARAMETER", "MISSING_COLLECTION", "UNSUPPORTED_OPERATION", "OUTPUT_NOT_EMPTY",
    "INPUT_SHAPE_INVALID",
}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case, tmp_path, tfjs):
    outcome = run_case(case, tmp_path, tfjs)
    assert outcome.ok, "\n".join([outcome.line(), *outcome.notices, outcome.error])


def test_corpus_is_large_and_balanced():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    fixable = [c for c in CASES if c.expect == FIXED]
    assert len(CASES) >= 30 and len(fixable) >= 15 and len(CASES) - len(fixable) >= 15


def test_every_fix_is_exercised_by_a_fixable_case():
    exercised = {code for c in CASES if c.expect == FIXED for code in c.codes}
    assert set(REGISTRY) - exercised == set()


def test_every_required_error_is_in_the_corpus():
    assert REQUIRED_ERRORS - {c.expect for c in CASES} == set()


def test_cli_prints_code_and_hint_without_traceback(tmp_path):
    by_name("truncated-msgpack").build(tmp_path)
    result = subprocess.run([sys.executable, "-m", "writer", str(tmp_path / "mlp.msgpack"), str(tmp_path / "out")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error[TRUNCATED_CHECKPOINT]: ") and "mlp.msgpack" in lines[0]
    assert lines[-1].startswith("hint: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_allow_nonfinite_writes_the_nan_case(tmp_path, tfjs):
    by_name("nan-weight").build(tmp_path)
    to_tensorflowjs(tmp_path / "nan.msgpack", tmp_path / "out", allow_nonfinite=True)
    y = tfjs.predict(tmp_path / "out", [fm.inputs(M.MLP_INPUT, batch=2)]).outputs[0]
    assert np.isnan(y).any()  # the NaNs were written, as asked


def test_no_fix_keeps_exact_checkpoints_working(tmp_path, tfjs):
    module, variables = M.MLP(), fm.init(M.MLP(), M.MLP_INPUT)
    path = fm.save_msgpack(variables, tmp_path / "ok.msgpack")
    report = to_tensorflowjs(path, tmp_path / "out", module=module, input_shape=M.MLP_INPUT, fix=False)
    assert not [n for n in report.notices if n.kind == "fixed"]
    x = fm.inputs(M.MLP_INPUT)
    np.testing.assert_allclose(tfjs.predict(tmp_path / "out", [x]).outputs[0], fm.run(module, variables, x),
                               rtol=1e-5, atol=1e-5)


def test_no_fix_refuses_what_fixes_would_repair(tmp_path):
    for name in ("nested-params", "torch-dense-template", "wrong-channels-template"):
        folder = tmp_path / name
        folder.mkdir()
        built = by_name(name).build(folder)
        with pytest.raises(ConversionError) as caught:
            to_tensorflowjs(built.source, folder / "out", module=built.module, **{**built.options, "fix": False})
        assert caught.value.code == "FIX_DISABLED" and "--no-fix" in caught.value.hint
        assert not (folder / "out").exists()


def test_diagnostics_report_prints_rates(capsys):
    from tests.corpus.report import main

    assert main(["-k", "flax-optim-target", "-k", "empty-file"]) == 0
    out = capsys.readouterr().out
    assert "fixed correctly (TF.js == JAX): 1/1 = 100.0%" in out and "clear errors:" in out and "1/1 = 100.0%" in out


# -- the fixes' rules, directly ------------------------------------------------------------------


def _ref(path, shape):
    from topology.vocabulary.tensors import TensorRef

    return TensorRef(path, shape, np.dtype("float32"), lambda: np.zeros(shape, np.float32))


def test_square_kernels_alone_keep_the_flax_layout():
    from topology.vocabulary.errors import Notices
    from writer.fixes.shapes import fit_chain

    params = {("Dense_0", "kernel"): _ref(("Dense_0", "kernel"), (8, 8)),
              ("Dense_1", "kernel"): _ref(("Dense_1", "kernel"), (8, 8))}
    notices = Notices()
    assert fit_chain(params, "ck", notices, True) == params and not notices.items  # nothing tells: nothing done


def test_kernels_without_bias_are_repaired_by_the_chain_alone():
    from topology.vocabulary.errors import Notices
    from writer.fixes.shapes import fit_chain

    params = {("Dense_0", "kernel"): _ref(("Dense_0", "kernel"), (5, 3)),   # (out, in): 3 -> 5
              ("Dense_1", "kernel"): _ref(("Dense_1", "kernel"), (2, 5))}   # 5 -> 2
    fixed = fit_chain(params, "ck", Notices(), True)
    assert [fixed[p].shape for p in params] == [(3, 5), (5, 2)]


def test_key_normalisation_never_merges_two_tensors():
    from topology.vocabulary.errors import Notices
    from writer.fixes.keys import normalise_paths

    tree = {("w.value",): _ref(("w.value",), (2,)), ("w",): _ref(("w",), (3,))}
    notices = Notices()
    assert normalise_paths(tree, "ck", notices, True) == tree and not notices.items


def test_module_whose_init_needs_a_training_rng_still_converts(tmp_path, tfjs):
    import flax.linen as nn

    class NoisyInit(nn.Module):
        @nn.compact
        def __call__(self, x):
            if self.is_mutable_collection("params"):  # only while initializing
                self.make_rng("noise")
            return nn.Dense(3)(x)

    module = NoisyInit()
    variables = {"params": {"Dense_0": {"kernel": np.ones((4, 3), np.float32), "bias": np.zeros(3, np.float32)}}}
    path = fm.save_msgpack(variables, tmp_path / "noisy.msgpack")
    to_tensorflowjs(path, tmp_path / "out", module=module, input_shape=(4,))
    x = fm.inputs((4,))
    np.testing.assert_allclose(tfjs.predict(tmp_path / "out", [x]).outputs[0], fm.run(module, variables, x),
                               rtol=1e-5, atol=1e-5)
