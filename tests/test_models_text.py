"""Text models end to end: saved checkpoint -> CLI (`python -m writer ... --module`) -> real TF.js vs JAX.

The model files live in examples/models/ (also used by the guides in docs/guides/).
Token batches include padding (id 0) so that every mask matters.
"""
from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import ROOT, assert_close
from tests.flax_models import save_msgpack, save_orbax
from tests.jax_reference import compare_batches, random_inputs


def _cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "writer", *map(str, args)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _tokens(batch: int, length: int, vocab: int, seed: int) -> np.ndarray:
    """Token ids with trailing padding (0) of a different length per example."""
    rng = np.random.RandomState(seed)
    tokens = rng.randint(1, vocab, (batch, length)).astype(np.int32)
    for row in range(batch):
        tokens[row, length - rng.randint(0, length // 2 + 1):] = 0
    return tokens


@pytest.mark.parametrize("fmt", ["orbax", "msgpack"])
def test_transformer_lm_with_partitioned_params(tmp_path, tfjs, fmt):
    from examples.models.transformer_lm import TransformerLM

    model, length = TransformerLM(), 12
    variables = model.init(jax.random.PRNGKey(0), jnp.ones((1, length), jnp.int32))
    assert type(variables["params"]["Embed_0"]["embedding"]).__name__ == "LogicallyPartitioned"
    save = save_orbax if fmt == "orbax" else save_msgpack
    checkpoint = save(variables, tmp_path / ("ckpt" if fmt == "orbax" else "lm.msgpack"))
    result = _cli(checkpoint, tmp_path / "out", "--module", "examples/models/transformer_lm.py:TransformerLM",
                  "--input-shape", length, "--input-dtype", "int32")
    assert "fixed[BOXED_VALUE_LEAVES]" in result.stdout
    for batch in (1, 3):
        tokens = _tokens(batch, length, model.vocab, seed=batch)
        [out] = tfjs.predict(tmp_path / "out", [tokens]).outputs
        assert_close(out, np.asarray(model.apply(variables, jnp.asarray(tokens))))


def test_gpt2_style_decoder(tmp_path, tfjs):
    from examples.models.gpt2_decoder import GPT2

    model, length = GPT2(), 10
    variables = model.init(jax.random.PRNGKey(1), jnp.ones((1, length), jnp.int32))
    checkpoint = save_msgpack(variables, tmp_path / "gpt2.msgpack")
    _cli(checkpoint, tmp_path / "out", "--module", "examples/models/gpt2_decoder.py:GPT2",
         "--input-shape", length, "--input-dtype", "int32")
    compare_batches(tfjs, tmp_path / "out", lambda xs: np.asarray(model.apply(variables, jnp.asarray(xs[0]))),
                    lambda batch: random_inputs([(length,)], batch, batch, "int32", 0, model.vocab))


def _bert_batch(batch: int, length: int, vocab: int, seed: int) -> list[np.ndarray]:
    ids = _tokens(batch, length, vocab, seed)
    mask = (ids > 0).astype(np.int32)
    segments = (np.arange(length)[None, :] >= length // 2).astype(np.int32) * mask
    return [ids, mask, np.broadcast_to(segments, ids.shape).copy()]


def test_bert_style_classifier_with_attention_mask(tmp_path, tfjs):
    from examples.models.bert_classifier import BertClassifier

    model, length = BertClassifier(), 12
    example = [jnp.ones((1, length), jnp.int32)] * 3
    variables = model.init(jax.random.PRNGKey(2), *example)
    checkpoint = save_orbax(variables, tmp_path / "ckpt")
    _cli(checkpoint, tmp_path / "out", "--module", "examples/models/bert_classifier.py:BertClassifier",
         *["--input-shape", length] * 3, "--input-dtype", "int32")
    for batch in (1, 3):
        xs = _bert_batch(batch, length, model.vocab, seed=batch)
        [out] = tfjs.predict(tmp_path / "out", xs).outputs
        expected = np.asarray(model.apply(variables, *map(jnp.asarray, xs)))
        assert_close(out, expected)
        # The mask matters: changing a padded token's id changes nothing in JAX or TF.js.
        changed = [x.copy() for x in xs]
        changed[0][xs[1] == 0] = 5
        if (xs[1] == 0).any():
            [again] = tfjs.predict(tmp_path / "out", changed).outputs
            assert_close(again, expected)


def test_lstm_classifier_with_a_scalar_lengths_input(tmp_path, tfjs):
    from examples.models.lstm_classifier import LstmClassifier

    model, length = LstmClassifier(), 9
    variables = model.init(jax.random.PRNGKey(3), jnp.ones((1, length), jnp.int32), jnp.ones((1,), jnp.int32))
    checkpoint = save_msgpack(variables, tmp_path / "lstm.msgpack")
    result = _cli(checkpoint, tmp_path / "out", "--module", "examples/models/lstm_classifier.py:LstmClassifier",
                  "--input-shape", length, "--input-shape", "", "--input-dtype", "int32")
    layers = json.loads((tmp_path / "out" / "model.json").read_text())["modelTopology"]["model_config"]["config"]["layers"]
    assert [l["config"]["batch_input_shape"] for l in layers if l["class_name"] == "InputLayer"] == [[None, length], [None, 1]]
    assert result.stdout.count(" int32") >= 2
    for batch in (1, 3):
        tokens = _tokens(batch, length, model.vocab, seed=batch)
        lengths = (tokens > 0).sum(axis=1).astype(np.int32)
        [out] = tfjs.predict(tmp_path / "out", [tokens, lengths]).outputs
        assert_close(out, np.asarray(model.apply(variables, jnp.asarray(tokens), jnp.asarray(lengths))))
    # `verify` reads the scalar input back as shape () (model.json declares it (batch, 1)).
    checked = _cli("verify", tmp_path / "out", checkpoint, "--module", "examples/models/lstm_classifier.py:LstmClassifier",
                   "--samples", 8)
    assert "input (9,), ()" in checked.stdout and checked.stdout.rstrip().splitlines()[-1].startswith("PASS")


def test_seq2seq_encoder_carry_feeds_a_classifier(tmp_path, tfjs):
    from examples.models.seq2seq_encoder import Seq2SeqEncoderClassifier

    model, length = Seq2SeqEncoderClassifier(), 12
    variables = model.init(jax.random.PRNGKey(5), jnp.ones((1, length), jnp.int32))
    checkpoint = save_msgpack(variables, tmp_path / "encoder.msgpack")
    module = "examples/models/seq2seq_encoder.py:Seq2SeqEncoderClassifier"
    _cli(checkpoint, tmp_path / "out", "--module", module, "--input-shape", length, "--input-dtype", "int32")
    config = json.loads((tmp_path / "out" / "model.json").read_text())["modelTopology"]["model_config"]["config"]
    [lstm] = [l for l in config["layers"] if l["class_name"] == "LSTM"]
    assert lstm["config"]["return_state"] is True
    # The carry (c, h) is the LSTM's outputs 2 and 1, concatenated in that order.
    [concat] = [l for l in config["layers"] if l["class_name"] == "Concatenate"]
    assert [ref[:3] for ref in concat["inbound_nodes"][0]] == [[lstm["name"], 0, 2], [lstm["name"], 0, 1]]
    for batch in (1, 3):
        tokens = _tokens(batch, length, model.vocab, seed=10 + batch)
        [out] = tfjs.predict(tmp_path / "out", tokens).outputs
        assert_close(out, np.asarray(model.apply(variables, jnp.asarray(tokens))))
    checked = _cli("verify", tmp_path / "out", checkpoint, "--module", module, "--samples", 8)
    assert checked.stdout.rstrip().splitlines()[-1].startswith("PASS")
