"""Issue 20 point 9: say how to call the model (--call / --method / call=), so original modules
convert unwrapped: keyword-only inputs, an inference entry in another method, several keyword
inputs named in model.json; the signature error shows the flag to use."""
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
from flax.serialization import to_bytes

from tests.conftest import ROOT, assert_close
from topology.trace.call_spec import CallSpec
from writer import ConversionError, to_tensorflowjs
from writer.cli import main

MODEL_PY = '''
import flax.linen as nn

class KeywordOnly(nn.Module):
    @nn.compact
    def __call__(self, *, inputs, train: bool = True):
        x = nn.Dropout(0.5, deterministic=not train)(nn.relu(nn.Dense(8)(inputs)))
        return nn.Dense(3)(x)
'''


class AutoEncoder(nn.Module):
    def setup(self):
        self.enc = nn.Dense(4)
        self.dec = nn.Dense(6)

    def __call__(self, x):
        return self.dec(self.encode(x))

    def encode(self, x, squash: bool = False):
        return nn.tanh(self.enc(x)) if squash else self.enc(x)


class NnxEncoder(nnx.Module):
    def __init__(self):
        self.enc = nnx.Linear(6, 4, rngs=nnx.Rngs(0))
        self.dec = nnx.Linear(4, 6, rngs=nnx.Rngs(1))

    def __call__(self, x):
        return self.dec(self.encode(x, mask=jnp.ones((1, 4))))

    def encode(self, x, *, mask):
        return nnx.relu(self.enc(x)) * mask


def _x(shape, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("text, method, inputs, keywords", [
    ("encode", "encode", (), ()),
    ("encode(*, squash=True)", "encode", (None,), (("squash", True),)),
    ("(inputs=*, train=False)", "__call__", ("inputs",), (("train", False),)),
    ("f(*, mask=*, k=(1, 2), name='a')", "f", (None, "mask"), (("k", (1, 2)), ("name", "a"))),
])
def test_call_text_parses_and_round_trips(text, method, inputs, keywords):
    spec = CallSpec.parse(text)
    assert (spec.method, spec.inputs, spec.keywords) == (method, inputs, keywords)
    assert CallSpec.parse(spec.text()) == spec


@pytest.mark.parametrize("text", ["encode(", "encode(x)", "encode(**k)", "encode(t=foo())", "a.b(*)"])
def test_bad_call_text_is_a_coded_error(text):
    with pytest.raises(ConversionError) as err:
        CallSpec.parse(text)
    assert err.value.code == "BAD_CALL_SPEC" and "--call" in err.value.hint


def test_keyword_only_module_converts_unwrapped_from_the_cli(tmp_path, tfjs):
    (tmp_path / "model.py").write_text(MODEL_PY)
    namespace: dict = {}
    exec(MODEL_PY, namespace)  # the same class the CLI imports, for the JAX reference
    module = namespace["KeywordOnly"]()
    variables = module.init({"params": jax.random.PRNGKey(0)}, inputs=jnp.zeros((1, 5)))
    (tmp_path / "ck.msgpack").write_bytes(to_bytes(variables))
    base = [str(tmp_path / "ck.msgpack"), str(tmp_path / "out"), "--module", f"{tmp_path / 'model.py'}:KeywordOnly",
            "--input-shape", "5"]
    refused = subprocess.run([sys.executable, "-m", "writer", *base], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2 and "error[MODULE_SIGNATURE]" in refused.stderr
    assert "--call '__call__(inputs=*, train=False)'" in refused.stderr and not (tmp_path / "out").exists()
    assert main([*base, "--call", "__call__(inputs=*, train=False)", "-q"]) == 0
    document = json.loads((tmp_path / "out" / "model.json").read_text())
    assert [i["name"] for i in document["userDefinedMetadata"]["flax2tfjs"]["inputs"]] == ["inputs"]
    x = _x((3, 5))
    assert_close(tfjs.predict(tmp_path / "out", [x]).outputs[0],
                 np.asarray(module.apply(variables, inputs=x, train=False)))
    # verify takes the same flags (and refuses to run without them: the module's __call__ needs them)
    assert main(["verify", str(tmp_path / "out"), *base[:1], *base[2:], "--call", "__call__(inputs=*, train=False)",
                 "--input-dtype", "float32", "--samples", "4", "-q"]) == 0


def test_linen_method_other_than_call(tmp_path, tfjs):
    module = AutoEncoder()
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 6)))
    x = _x((2, 6), 1)
    report = to_tensorflowjs(module, tmp_path / "plain", variables=variables, call="encode", input_shape=(6,))
    assert [layer.name for layer in report.layers] == ["enc"]  # the decoder is not part of encode
    assert_close(tfjs.predict(tmp_path / "plain", [x]).outputs[0],
                 np.asarray(module.apply(variables, x, method="encode")))
    to_tensorflowjs(module, tmp_path / "squash", variables=variables, call="encode(*, squash=True)", input_shape=(6,))
    assert_close(tfjs.predict(tmp_path / "squash", [x]).outputs[0],
                 np.asarray(module.apply(variables, x, squash=True, method="encode")))


def test_nnx_method_with_a_keyword_array_input(tmp_path, tfjs):
    model = NnxEncoder()
    report = to_tensorflowjs(model, tmp_path / "out", call="encode(*, mask=*)", input_shape=[(6,), (4,)])
    assert [(i.name, i.shape) for i in report.inputs] == [("input_1", (6,)), ("mask", (4,))]
    x, mask = _x((3, 6), 2), (np.random.RandomState(3).uniform(0, 1, (3, 4)) > 0.5).astype(np.float32)
    assert_close(tfjs.predict(tmp_path / "out", [x, mask]).outputs[0], np.asarray(model.encode(x, mask=mask)))


@pytest.mark.parametrize("call, code", [
    ("decode", "CALL_METHOD_NOT_FOUND"),
    ("encode(*, mask=*)", "CALL_INPUT_COUNT"),
])
def test_call_that_does_not_fit_the_model_is_a_coded_error(tmp_path, call, code):
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(NnxEncoder(), tmp_path / "out", call=call, input_shape=(6,))
    assert err.value.code == code and not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags", [["--call", "encode", "--method", "encode"], ["--method", "encode"]],
                         ids=["both", "without-module"])
def test_call_that_cannot_apply_is_refused(tmp_path, capsys, flags):
    assert main(["examples/mnist_ckpt", str(tmp_path / "out"), *flags]) == 2
    assert capsys.readouterr().err.startswith("error[BAD_OPTION]") and not (tmp_path / "out").exists()
