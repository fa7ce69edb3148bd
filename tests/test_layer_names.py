"""Layer names tfjs rejects (``_fc1``, ``fc 1``, ``dénse``) are rewritten, and the model still runs in TF.js."""
from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tests.conftest import assert_close, predict_tfjs
from writer import to_tensorflowjs
from writer.layer_names import tfjs_layer_name


class OddNames(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(8, name="_fc1")(x))
        x = nn.relu(nn.Dense(8, name="fc 1")(x))
        x = nn.relu(nn.Dense(8, name="fc_1")(x))  # what "fc 1" becomes: must stay distinct
        return nn.Dense(3, name="dénse")(x)


def test_odd_layer_names_load_and_predict_in_tfjs(tmp_path, tfjs):
    model = OddNames()
    variables = model.init(jax.random.PRNGKey(0), jnp.ones((1, 5)))
    report = to_tensorflowjs(model, tmp_path / "out", variables=variables, input_shape=(5,))
    fixed = [n for n in report.notices if n.code == "LAYER_NAME"]
    assert fixed and fixed[0].kind == "fixed" and "'dénse' -> 'dense'" in fixed[0].message
    document = json.loads((tmp_path / "out" / "model.json").read_text())
    names = [w["name"] for w in document["weightsManifest"][0]["weights"]]
    assert names == ["fc1/kernel", "fc1/bias", "fc_1_1/kernel", "fc_1_1/bias", "fc_1/kernel", "fc_1/bias",
                     "dense/kernel", "dense/bias"]
    x = np.random.RandomState(0).randn(4, 5).astype(np.float32)
    assert_close(predict_tfjs(tfjs, tmp_path / "out", x), np.asarray(model.apply(variables, x)))


def test_valid_names_are_kept():
    assert [tfjs_layer_name(n) for n in ["Dense_0", "conv-1", "a.b"]] == ["Dense_0", "conv-1", "a.b"]


class OddNamedEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        (c, h), _ = nn.RNN(nn.LSTMCell(4), return_carry=True, name="enc oder")(x)
        return nn.Dense(2)(jnp.concatenate([c, h], axis=-1))


def test_renaming_keeps_the_output_index_of_a_carry(tmp_path, tfjs):
    # The carry is read as "enc oder:2" and "enc oder:1"; the rename must give "enc_oder:2", "enc_oder:1".
    model = OddNamedEncoder()
    x = np.random.RandomState(0).normal(size=(3, 5, 2)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(0), jnp.asarray(x))
    to_tensorflowjs(model, tmp_path / "out", variables=variables, input_shape=(5, 2))
    layers = json.loads((tmp_path / "out" / "model.json").read_text())["modelTopology"]["model_config"]["config"]["layers"]
    [concat] = [l for l in layers if l["class_name"] == "Concatenate"]
    assert [ref[:3] for ref in concat["inbound_nodes"][0]] == [["enc_oder", 0, 2], ["enc_oder", 0, 1]]
    assert_close(predict_tfjs(tfjs, tmp_path / "out", x), np.asarray(model.apply(variables, x)))
