"""The packaged TF.js (web_demo/vendor's browser build, run in Node) predicts exactly like npm's.

An installed wheel has no node_modules: verify runs the browser bundle the demo
ships (writer/tfjs_node.py, source "bundle"). The tests use @tensorflow/tfjs from
node_modules (source "npm"). Both are tfjs 4.22.0; here the same converted model
and inputs go through both, on cpu and wasm, and the outputs must be identical.
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import ROOT
from topology.vocabulary.errors import ConversionError
from writer.tfjs_node import TfjsRunner


@pytest.fixture(scope="module")
def npm():
    """Forced npm: without node_modules this is TFJS_NOT_INSTALLED, never bundle-vs-bundle."""
    with TfjsRunner(tfjs="npm") as runner:
        yield runner


@pytest.fixture(scope="module")
def bundle():
    with TfjsRunner(tfjs="bundle") as runner:
        yield runner


@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory):
    from writer.cli import main

    out = tmp_path_factory.mktemp("bundle") / "mnist"
    assert main([str(ROOT / "examples" / "mnist_ckpt"), str(out), "--quiet"]) == 0
    return out


def test_sources_are_what_they_claim(npm, bundle):
    assert npm.source() == "npm" and bundle.source() == "bundle"
    assert npm.version() == bundle.version() == "4.22.0"


@pytest.mark.parametrize("backend", ["cpu", "wasm"])
def test_bundle_predicts_exactly_like_npm(npm, bundle, mnist_model, backend):
    x = np.random.default_rng(7).random((32, 28, 28, 1), dtype=np.float32)
    npm_out = npm.predict(mnist_model, x, backend=backend)
    bundle_out = bundle.predict(mnist_model, x, backend=backend)
    assert bundle_out.backend == npm_out.backend == backend
    assert bundle_out.output.shape == (32, 10)
    np.testing.assert_array_equal(bundle_out.output, npm_out.output)


def test_bundle_summary_matches_npm(npm, bundle, mnist_model):
    assert bundle.summary(mnist_model) == npm.summary(mnist_model)


def test_unknown_source_is_a_coded_error(monkeypatch):
    monkeypatch.setenv("FLAX2TFJS_TFJS", "cdn")
    with pytest.raises(ConversionError) as err:
        TfjsRunner()
    assert err.value.code == "BAD_OPTION" and "bundle" in err.value.hint
