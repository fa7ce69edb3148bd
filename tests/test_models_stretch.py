"""Stretch models: a small transformer block and LSTM sequence classifiers, in real TF.js vs JAX.

Self-attention has no tfjs layer and is composed from Dense/Dot/softmax layers
(topology/layers/attention.py); nn.RNN over an LSTM cell becomes tfjs' LSTM with
the gate kernels packed (topology/layers/rnn.py); ``x[:, -1]`` is a Cropping2D
(topology/ops/slicing.py). Each model is also loaded by the official
``tensorflowjs`` package (tf-keras) when its virtualenv exists. Unsupported
variants stop with UNSUPPORTED_OPERATION and say why.
"""
from __future__ import annotations

import json
import os
import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import ROOT, assert_close
from tests.jax_reference import compare_batches, random_inputs, randomize
from writer import ConversionError, to_tensorflowjs

OFFICIAL_PY = ROOT / ".venv-tfjs" / "bin" / "python"
OFFICIAL_SCRIPT = ROOT / "tests" / "official_tfjs" / "load_and_predict.py"


class TransformerBlock(nn.Module):
    """Dense embedding -> self-attention + residual -> LayerNorm -> gelu MLP + residual -> mean -> Dense."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8)(x)
        h = nn.LayerNorm()(h + nn.MultiHeadDotProductAttention(num_heads=2)(h))
        h = h + nn.Dense(8)(jax.nn.gelu(nn.Dense(16)(h)))
        return nn.Dense(3)(jnp.mean(h, axis=1))


class NnxTransformerBlock(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Linear(5, 8, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=4, in_features=8, num_kv_heads=2, decode=False, rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        h = self.embed(x)
        h = self.norm(h + self.attn(h))
        return self.head(h.mean(axis=1))


class SequenceClassifier(nn.Module):
    """LSTM over the sequence, last step, Dense."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.RNN(nn.LSTMCell(16))(x)[:, -1, :])


class TextClassifier(nn.Module):
    """Token ids -> Embed -> bidirectional LSTM -> last step -> Dense."""

    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(30, 8)(tokens)
        h = nn.Bidirectional(nn.RNN(nn.LSTMCell(6)), nn.RNN(nn.LSTMCell(6)))(h)
        return nn.Dense(2)(h[:, -1])


class NnxSequenceClassifier(nnx.Module):
    """The NNX default: the RNN keeps its own rng stream (for the carry) in the state."""

    def __init__(self, rngs: nnx.Rngs):
        self.rnn = nnx.RNN(nnx.LSTMCell(3, 10, rngs=rngs))
        self.head = nnx.Linear(10, 4, rngs=rngs)

    def __call__(self, x):
        return self.head(self.rnn(x)[:, -1, :])


def _linen(module, shape, dtype="float32"):
    example = jnp.zeros((1, *shape), dtype)
    variables = randomize(module.init(jax.random.PRNGKey(0), example))
    return module, variables, lambda x: np.asarray(module.apply(variables, jnp.asarray(x)))


def _nnx(model):
    nnx.update(model, randomize(nnx.state(model, nnx.Param)))
    model.eval()
    return model, None, lambda x: np.asarray(model(jnp.asarray(x)))


MODELS = {
    # name: (build -> (module, variables, run_jax), input shape, dtype)
    "linen-transformer-block": (lambda: _linen(TransformerBlock(), (6, 5)), (6, 5), "float32"),
    "nnx-transformer-block-gqa": (lambda: _nnx(NnxTransformerBlock(nnx.Rngs(0))), (6, 5), "float32"),
    "linen-lstm-classifier": (lambda: _linen(SequenceClassifier(), (20, 3)), (20, 3), "float32"),
    "linen-text-bilstm-classifier": (lambda: _linen(TextClassifier(), (9,), "int32"), (9,), "int32"),
    "nnx-lstm-classifier": (lambda: _nnx(NnxSequenceClassifier(nnx.Rngs(0))), (7, 3), "float32"),
}


def _inputs(shape, dtype, batch, seed):
    low, high = (0, 30) if dtype == "int32" else (-2, 2)
    return random_inputs([shape], batch, seed, dtype, low, high)[0]


def _convert(name, out):
    build, shape, dtype = MODELS[name]
    module, variables, run_jax = build()
    to_tensorflowjs(module, out, variables=variables, input_shape=shape, input_dtype=dtype)
    return run_jax, shape, dtype


@pytest.mark.parametrize("name", list(MODELS))
def test_stretch_model_matches_jax_in_tfjs(tmp_path, tfjs, name):
    run_jax, shape, dtype = _convert(name, tmp_path / "out")
    classes = {layer["class_name"] for layer in _layers(tmp_path / "out")}
    assert not classes & {"MultiHeadAttention", "Lambda", "GRU"}, classes  # only built-in tfjs layers
    compare_batches(tfjs, tmp_path / "out", lambda xs: run_jax(xs[0]),
                    lambda batch: [_inputs(shape, dtype, batch, seed=batch)])


def _layers(out):
    topology = json.loads((out / "model.json").read_text())["modelTopology"]
    config = topology.get("model_config", topology)["config"]
    return config["layers"] if isinstance(config, dict) else config


def test_lstm_is_one_tfjs_lstm_with_flax_gate_semantics(tmp_path):
    _convert("linen-lstm-classifier", tmp_path / "out")
    lstm = [layer for layer in _layers(tmp_path / "out") if layer["class_name"] == "LSTM"]
    assert len(lstm) == 1
    config = lstm[0]["config"]
    # tfjs defaults to hard_sigmoid; Flax uses sigmoid gates, tanh, no forget-bias offset.
    assert (config["recurrent_activation"], config["activation"], config["unit_forget_bias"]) == \
        ("sigmoid", "tanh", False)
    assert config["return_sequences"] is True and config["go_backwards"] is False


def test_official_tensorflowjs_loads_the_stretch_models(tmp_path):
    if os.environ.get("FLAX2TFJS_SKIP_OFFICIAL") == "1" or not OFFICIAL_PY.exists():
        pytest.skip("official tensorflowjs virtualenv not available (scripts/setup_tfjs_venv.sh)")
    jobs, expected = [], {}
    for name in MODELS:
        out = tmp_path / name
        run_jax, shape, dtype = _convert(name, out)
        x = _inputs(shape, dtype, 3, seed=7)
        np.save(tmp_path / f"{name}_x.npy", x)
        jobs.append({"model": str(out), "inputs": [str(tmp_path / f"{name}_x.npy")],
                     "outputs": [str(tmp_path / f"{name}_y.npy")]})
        expected[name] = run_jax(x)
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([str(OFFICIAL_PY), str(OFFICIAL_SCRIPT), "--jobs", str(tmp_path / "jobs.json")],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and len(lines) == len(jobs), proc.stdout + proc.stderr[-3000:]
    for name, want in expected.items():
        assert_close(np.load(tmp_path / f"{name}_y.npy"), want)


UNSUPPORTED = {
    # name: (module factory, input shape, words the message or hint must contain)
    "gru": (lambda: nn.RNN(nn.GRUCell(4)), (5, 3), ("GRUCell", "reset_after")),
    "nnx-gru": (lambda: nnx.RNN(nnx.GRUCell(3, 4, rngs=nnx.Rngs(0))), (5, 3), ("GRUCell", "reset_after")),
    # Causal and padding masks convert now: cases in topology/layers/attention_mask.py.
    "normalize-qk": (lambda: nn.MultiHeadDotProductAttention(2, normalize_qk=True), (5, 4), ("normalize_qk",)),
    # return_carry=True converts (cases in topology/layers/rnn.py), but not with per-example lengths:
    # Flax then returns the carry at each sequence's own last step (its own code; --format auto converts it,
    # tests/test_sst2_seq2seq_constructs.py).
    "return-carry-seq-lengths": (lambda: _CarryWithLengths(), (5, 2), ("return_carry", "seq_lengths")),
    "time-major": (lambda: nn.RNN(nn.LSTMCell(3), time_major=True), (5, 2), ("time_major",)),
    "hard-sigmoid-gates": (lambda: nn.RNN(nn.LSTMCell(3, gate_fn=nn.hard_sigmoid)), (5, 2), ("gate_fn",)),
    "batch-slice": (lambda: _BatchSlice(), (4,), ("batch axis",)),
}


SPECIFIC_CODES = {"return-carry-seq-lengths": "RNN_CARRY_AT_LENGTHS"}  # refusals with a code of their own


class _CarryWithLengths(nn.Module):
    @nn.compact
    def __call__(self, x):
        lengths = jnp.full((x.shape[0],), 3, jnp.int32)
        (_, h), _ = nn.RNN(nn.LSTMCell(3), return_carry=True)(x, seq_lengths=lengths)
        return h


class _BatchSlice(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(x)[:1]  # with the trace batch of 2 this drops a row


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_variants_stop_with_a_reason(tmp_path, name):
    build, shape, words = UNSUPPORTED[name]
    module = build()
    if isinstance(module, nnx.Module):
        variables = None
    else:
        variables = module.init(jax.random.PRNGKey(0), jnp.zeros((2, *shape)))
    with pytest.raises(ConversionError) as caught:
        to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=shape)
    error = caught.value
    assert error.code == SPECIFIC_CODES.get(name, "UNSUPPORTED_OPERATION")
    text = f"{error.message} {error.hint}"
    assert all(word in text for word in words), text
    assert not (tmp_path / "out" / "model.json").exists()  # no partial output
