"""Issue 20 points 6 and 8: what the user gave is taken as given.

Several int32 inputs keep their dtypes (a GPT-2-style wrapper with input_ids, position_ids and
attention_mask used to stop with INTERNAL "lax.ne requires arguments to have the same dtypes");
a model whose shape handling breaks at the trace batch is a coded error; an NNX training
checkpoint {model, optimizer, step} is converted from its model state with a notice; an explicit
scalar --input-shape is honoured (never replaced by a solved shape).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.serialization import to_bytes

from tests.conftest import assert_close
from writer import ConversionError, to_tensorflowjs
from writer.cli import main


class GptWrapper(nn.Module):  # three int32 inputs, the mask compared with an int constant
    @nn.compact
    def __call__(self, input_ids, position_ids, attention_mask):
        x = nn.Embed(50, 16)(input_ids) + nn.Embed(16, 16)(position_ids)
        mask = nn.make_attention_mask(attention_mask > 0, attention_mask > 0)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2)(nn.LayerNorm()(x), mask=mask)
        return nn.Dense(50)(x)


class SqueezesTheBatch(nn.Module):  # works at batch 1 only: squeezes axis 0 of the lengths
    @nn.compact
    def __call__(self, tokens, lengths):
        y = nn.RNN(nn.LSTMCell(4))(nn.Embed(20, 5)(tokens), seq_lengths=jnp.squeeze(lengths, 0))
        return nn.Dense(2)(y.sum(1))


class ScalarFeature(nn.Module):  # one number per example
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Dense(4)(x[:, None])))


class NnxMlp(nnx.Module):
    def __init__(self, rngs: nnx.Rngs = nnx.Rngs(0)):
        self.hidden = nnx.Linear(6, 8, rngs=rngs)
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def test_several_int32_inputs_keep_their_dtype(tmp_path, tfjs):
    module = GptWrapper()
    ids = np.random.RandomState(0).randint(0, 50, (3, 8)).astype(np.int32)
    positions = np.broadcast_to(np.arange(8, dtype=np.int32), (3, 8)).copy()
    mask = np.ones((3, 8), np.int32)
    mask[1, 5:] = 0
    variables = module.init(jax.random.PRNGKey(0), ids, positions, mask)
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=[(8,)] * 3,
                             input_dtype="int32")
    assert [spec.dtype for spec in report.inputs] == ["int32"] * 3
    expected = np.asarray(module.apply(variables, ids, positions, mask))
    assert_close(tfjs.predict(tmp_path / "out", [ids, positions, mask]).outputs[0], expected)


def test_a_model_that_breaks_at_the_trace_batch_is_coded(tmp_path, capsys):
    module = SqueezesTheBatch()
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 6), jnp.int32), jnp.ones((1,), jnp.int32))
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=[(6,), (1,)], input_dtype="int32")
    assert err.value.code == "INPUT_SHAPE_INVALID" and "squeeze" in err.value.message
    assert "test_explicit_inputs.py:" in err.value.message and "batch 2" in err.value.hint
    assert not (tmp_path / "out").exists()


def _nnx_training_checkpoint(folder, model, fmt):
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    if fmt == "orbax":  # as Flax's NNX examples save it
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(folder / "ckpt", {"model": nnx.state(model), "optimizer": nnx.state(optimizer),
                                                "step": 7})
        return folder / "ckpt"
    tree = {"model": nnx.state(model).to_pure_dict(), "optimizer": nnx.state(optimizer).to_pure_dict(),
            "step": np.int32(7)}
    (folder / "ckpt.msgpack").write_bytes(to_bytes(tree))
    return folder / "ckpt.msgpack"


@pytest.mark.parametrize("fmt", ["msgpack", "orbax"])
def test_nnx_checkpoint_with_optimizer_and_step_converts_from_the_model_state(tmp_path, tfjs, fmt):
    trained = NnxMlp(nnx.Rngs(5))  # other weights than NnxMlp(): the checkpoint's must be the ones written
    checkpoint = _nnx_training_checkpoint(tmp_path, trained, fmt)
    report = to_tensorflowjs(checkpoint, tmp_path / "out", module=NnxMlp(), input_shape=(6,))
    notes = {n.code: n.message for n in report.notices}
    assert "'model'" in notes["MODEL_STATE"] and "'optimizer'" in notes["MODEL_STATE"]
    x = np.random.RandomState(2).uniform(-1, 1, (4, 6)).astype(np.float32)
    assert_close(tfjs.predict(tmp_path / "out", [x]).outputs[0], np.asarray(trained(jnp.asarray(x))))


def test_nnx_training_checkpoint_without_model_state_hint_is_for_nnx(tmp_path, capsys):
    model = NnxMlp()
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    (tmp_path / "ck.msgpack").write_bytes(to_bytes({"optimizer": nnx.state(optimizer).to_pure_dict(),
                                                    "step": np.int32(1)}))
    assert main([str(tmp_path / "ck.msgpack"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error[NO_PARAMS]") and "nnx.state(model)" in err and "TrainState" not in err


def test_explicit_scalar_input_shape_is_honoured(tmp_path, tfjs):
    module = ScalarFeature()
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1,)))
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=())
    assert report.inputs[0].shape == () and not any(n.code == "INPUT_SHAPE" for n in report.notices)
    x = np.array([-1.5, 0.25, 2.0], np.float32)
    assert_close(tfjs.predict(tmp_path / "out", [x]).outputs[0], np.asarray(module.apply(variables, x)))


def test_explicit_scalar_input_shape_that_conflicts_is_coded(tmp_path, capsys):
    (tmp_path / "ck.msgpack").write_bytes(to_bytes(nn.Dense(3).init(jax.random.PRNGKey(0), jnp.zeros((1, 8)))))
    model_py = tmp_path / "model.py"
    model_py.write_text("import flax.linen as nn\n\nclass Model(nn.Module):\n    @nn.compact\n"
                        "    def __call__(self, x):\n        return nn.Dense(3)(x)\n")
    assert main([str(tmp_path / "ck.msgpack"), str(tmp_path / "out"), "--module", f"{model_py}:Model",
                 "--input-shape", ""]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error[INPUT_SHAPE_MISMATCH]") and 'input-shape ""' in err
    assert not (tmp_path / "out").exists()


class EmbedFirst(nn.Module):
    @nn.compact
    def __call__(self, ids):
        return nn.Dense(2)(nn.Embed(10, 4)(ids).reshape((ids.shape[0], -1)))


def test_explicit_float_dtype_for_token_ids_is_not_replaced(tmp_path):
    """Without --input-dtype the ids are made int32 (fixed[INPUT_DTYPE]); a float32 the user gave stays an error."""
    module = EmbedFirst()
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.int32))
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=(3,), input_dtype="float32")
    assert err.value.code == "INPUT_DTYPE_MISMATCH" and "int32" in err.value.hint
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=(3,))
    assert report.inputs[0].dtype == "int32" and any(n.code == "INPUT_DTYPE" for n in report.notices)
