"""Issue 20's last two constructs, run in real TF.js against JAX: sst2's pick of the state at
``lengths - 1`` (take_along_axis) as a LayersModel, out-of-range lengths included (NaN as in JAX);
and the seq2seq encoder's ``nn.RNN(return_carry=True)`` with ``seq_lengths=``: refused by the
LayersModel emitter with RNN_CARRY_AT_LENGTHS, converted by ``--format auto`` (a GraphModel)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import assert_close
from topology.vocabulary.errors import ConversionError
from writer import to_tensorflowjs

L = 6


class Pick(nn.Module):  # the sst2 example's last state
    @nn.compact
    def __call__(self, tokens, lengths):
        h = nn.Dense(8)(nn.Embed(20, 8)(tokens))
        idx = (lengths - 1)[:, None, None]
        last = jnp.take_along_axis(h, jnp.broadcast_to(idx, (h.shape[0], 1, h.shape[2])), axis=1)[:, 0]
        return nn.Dense(2)(last)


class CarryEncoder(nn.Module):  # the flax seq2seq encoder: the carry at each sequence's own length
    @nn.compact
    def __call__(self, tokens, lengths):
        (c, h), _ = nn.RNN(nn.LSTMCell(5), return_carry=True)(nn.Embed(20, 4)(tokens), seq_lengths=lengths)
        return nn.Dense(3)(jnp.concatenate([c, h], axis=-1))


def _tokens(batch):
    return np.random.default_rng(0).integers(0, 20, (batch, L)).astype(np.int32)


def _variables(module):
    return module.init(jax.random.PRNGKey(0), jnp.zeros((1, L), jnp.int32), jnp.ones((1,), jnp.int32))


def test_pick_at_lengths_matches_jax_including_wrap_and_nan(tmp_path, tfjs):
    module = Pick()
    variables = _variables(module)
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=[(L,), ()],
                             input_dtype="int32")
    assert report.topology == "traced"
    lengths = np.array([1, L, 3, 0, L + 1, -L - 2, 2], np.int32)  # 0 wraps to L-1; L+1 and -L-2: NaN in JAX
    tokens = _tokens(len(lengths))
    expected = np.asarray(module.apply(variables, tokens, lengths))
    got = tfjs.predict(tmp_path / "out", [tokens, lengths]).outputs[0]
    nan = np.isnan(expected)
    assert nan[4:6].all() and not nan[[0, 1, 2, 3, 6]].any()
    np.testing.assert_array_equal(np.isnan(got), nan)
    assert_close(got[~nan[:, 0]], expected[~nan[:, 0]])


def test_carry_at_lengths_refused_by_layers_and_converted_by_auto(tmp_path, tfjs):
    module = CarryEncoder()
    variables = _variables(module)
    with pytest.raises(ConversionError) as refused:
        to_tensorflowjs(module, tmp_path / "layers", variables=variables, input_shape=[(L,), ()], input_dtype="int32")
    assert refused.value.code == "RNN_CARRY_AT_LENGTHS" and "--format auto" in refused.value.hint
    assert not (tmp_path / "layers").exists()
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=[(L,), ()],
                             input_dtype="int32", format="auto")
    assert report.topology == "graph-model"
    assert any("RNN_CARRY_AT_LENGTHS" in n.message for n in report.notices if n.code == "FORMAT_AUTO")
    lengths = np.array([1, L, 3, 2, 0], np.int32)  # ragged, 1 and L included; 0: the initial (zero) carry
    tokens = _tokens(len(lengths))
    expected = np.asarray(module.apply(variables, tokens, lengths))
    got = tfjs.predict(tmp_path / "out", [tokens, lengths]).outputs[0]
    assert_close(got, expected)


def test_verify_counts_a_nan_where_jax_has_nan_as_agreement():
    from writer.verify.outputs import compare

    same = compare([np.array([[np.nan, 1.0]], np.float32)], [np.array([[np.nan, 1.0]], np.float32)], None)
    assert same["nonfinite_outputs"] == 0 and same["max_abs_error"] == 0.0
    wrong = compare([np.array([[np.nan, 1.0]], np.float32)], [np.array([[0.0, 1.0]], np.float32)], None)
    assert wrong["nonfinite_outputs"] == 1 and wrong["max_abs_error"] == float("inf")
