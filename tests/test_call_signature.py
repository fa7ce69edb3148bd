"""Issue 14 point 8: what a model's __call__ needs besides its inputs, and float ids for an nn.Embed.

Required rng arguments get a fixed key and an assumption notice; an argument the converter
cannot supply is named (MODULE_SIGNATURE, not INPUT_SHAPE_INVALID); a float input of a
model that starts with an embedding becomes int32 token ids (fixed[INPUT_DTYPE]).
"""
from __future__ import annotations

import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import ROOT, assert_close
from writer import ConversionError, to_tensorflowjs


class NeedsRng(nn.Module):  # like the flax VAE example's (x, z_rng), on its deterministic path
    @nn.compact
    def __call__(self, x, z_rng):
        return nn.Dense(3)(nn.relu(nn.Dense(5)(x)))


class NeedsMask(nn.Module):
    @nn.compact
    def __call__(self, x, mask):
        return nn.Dense(3)(x) * mask


class NnxNeedsRngs(nnx.Module):
    def __init__(self):
        self.linear = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
        self.dropout = nnx.Dropout(0.5)

    def __call__(self, x, rngs: nnx.Rngs):
        return self.dropout(self.linear(x), rngs=rngs)


class EmbedFirst(nn.Module):
    @nn.compact
    def __call__(self, ids):
        return nn.Dense(2)(nn.Embed(10, 4)(ids).reshape((ids.shape[0], -1)))


def test_required_rng_argument_is_supplied_with_notice(tmp_path, tfjs):
    module = NeedsRng()
    x = np.random.RandomState(0).uniform(-1, 1, (3, 4)).astype(np.float32)
    variables = module.init(jax.random.PRNGKey(0), x, jax.random.PRNGKey(1))
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=(4,))
    notes = {n.code: n.message for n in report.notices}
    assert "z_rng" in notes["CALL_ARGUMENTS"]
    expected = np.asarray(module.apply(variables, x, jax.random.PRNGKey(5)))
    assert_close(tfjs.predict(tmp_path / "out", [x]).outputs[0], expected)


def test_nnx_required_rngs_is_supplied(tmp_path, tfjs):
    model = NnxNeedsRngs()
    report = to_tensorflowjs(model, tmp_path / "out", input_shape=(4,))
    assert any(n.code == "CALL_ARGUMENTS" and "rngs" in n.message for n in report.notices)
    x = np.random.RandomState(1).uniform(-1, 1, (2, 4)).astype(np.float32)
    model.eval()
    assert_close(tfjs.predict(tmp_path / "out", [x]).outputs[0], np.asarray(model(jnp.asarray(x), rngs=nnx.Rngs(3))))


def test_argument_the_converter_cannot_supply_is_named():
    module = NeedsMask()
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)), jnp.ones((1, 3)))
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(module, "/nonexistent/never-written", variables=variables, input_shape=(4,))
    assert err.value.code == "MODULE_SIGNATURE"
    assert "`mask`" in err.value.message and "NeedsMask.__call__(self, x, mask)" in err.value.message
    assert "wrap" in err.value.hint


def test_cli_names_signature_problem_and_writes_nothing(tmp_path):
    from flax.serialization import to_bytes

    (tmp_path / "model.py").write_text(
        "import flax.linen as nn\n\n"
        "class Model(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x, *, mask):\n"
        "        return nn.Dense(3)(x) * mask\n")
    params = {"params": {"Dense_0": {"kernel": np.zeros((4, 3), np.float32), "bias": np.zeros(3, np.float32)}}}
    (tmp_path / "ck.msgpack").write_bytes(to_bytes(params))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "writer", str(tmp_path / "ck.msgpack"), str(out),
                          "--module", f"{tmp_path / 'model.py'}:Model", "--input-shape", "4"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "error[MODULE_SIGNATURE]" in run.stderr and "`mask`" in run.stderr and "Traceback" not in run.stderr
    assert not out.exists()


def test_float_input_of_embedding_becomes_int32_ids(tmp_path, tfjs):
    module = EmbedFirst()
    ids = np.array([[1, 4, 9], [0, 2, 3]], np.int32)
    variables = module.init(jax.random.PRNGKey(0), ids)
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=(3,))
    assert any(n.kind == "fixed" and n.code == "INPUT_DTYPE" for n in report.notices)
    topology = json.loads((tmp_path / "out" / "model.json").read_text())["modelTopology"]
    assert '"int32"' in json.dumps(topology)
    assert_close(tfjs.predict(tmp_path / "out", [ids]).outputs[0], np.asarray(module.apply(variables, ids)))


def test_float_ids_refused_with_fixes_off(tmp_path):
    module = EmbedFirst()
    variables = module.init(jax.random.PRNGKey(0), np.zeros((1, 3), np.int32))
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=(3,), fix=False)
    assert err.value.code == "FIX_DISABLED" and "--input-dtype int32" in err.value.hint
