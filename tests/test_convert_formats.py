"""Checkpoint -> model.json in every supported format, checked in real TF.js against JAX."""
from __future__ import annotations

import flax
import jax
import numpy as np
import pytest

from tests import flax_models as fm
from tests.conftest import assert_close, predict_tfjs
from writer import to_tensorflowjs

CNN = fm.CNN()
CNN_SHAPE = (28, 28, 1)


@pytest.fixture(scope="module")
def cnn_variables():
    return fm.init(CNN, CNN_SHAPE)


@pytest.fixture(scope="module")
def cnn_input():
    return fm.inputs(CNN_SHAPE, batch=5)


@pytest.mark.parametrize(
    "features, input_shape",
    [((32, 10), (20,)), ((64, 32, 10), (784,))],
    ids=["mlp-2-layers", "mlp-3-layers"],
)
def test_mlp_from_msgpack_matches_jax(tmp_path, tfjs, features, input_shape):
    module = fm.MLP(features)
    variables = fm.init(module, input_shape)
    checkpoint = fm.save_msgpack(variables, tmp_path / "mlp.msgpack")
    report = to_tensorflowjs(checkpoint, tmp_path / "out")
    assert [layer.class_name for layer in report.layers] == ["Dense"] * len(features)
    x = fm.inputs(input_shape)
    assert_close(predict_tfjs(tfjs, tmp_path / "out", x), fm.run(module, variables, x))


def test_mlp_on_image_input_gets_a_flatten(tmp_path, tfjs):
    module = fm.MLP((16, 10))
    variables = fm.init(module, (28, 28, 1))
    checkpoint = fm.save_npz(variables, tmp_path / "mlp.npz")
    report = to_tensorflowjs(checkpoint, tmp_path / "out", input_shape=(28, 28, 1))
    assert [layer.class_name for layer in report.layers] == ["Flatten", "Dense", "Dense"]
    x = fm.inputs((28, 28, 1))
    assert_close(predict_tfjs(tfjs, tmp_path / "out", x), fm.run(module, variables, x))


def _save_every_format(name, variables, module, folder):
    params_only = {"params": variables["params"]}
    state = fm.train_state_of(module, variables)
    savers = {
        "msgpack-variables": lambda: fm.save_msgpack(params_only, folder / "v.msgpack"),
        "msgpack-frozendict": lambda: fm.save_msgpack(flax.core.freeze(params_only), folder / "f.msgpack"),
        "msgpack-trainstate": lambda: fm.save_msgpack(state, folder / "state.msgpack"),
        "msgpack-bare-params": lambda: fm.save_msgpack(variables["params"], folder / "p.msgpack"),
        "orbax-standard": lambda: fm.save_orbax(params_only, folder / "orbax"),
        "orbax-trainstate": lambda: fm.save_orbax(state, folder / "orbax_state"),
        "orbax-manager": lambda: fm.save_orbax_manager({1: params_only, 2: params_only}, folder / "manager"),
        "legacy-msgpack": lambda: fm.save_legacy(params_only, folder / "legacy", (3, 7), use_orbax=False),
        "legacy-orbax": lambda: fm.save_legacy(params_only, folder / "legacy_orbax", (3, 7), use_orbax=True),
        "npz": lambda: fm.save_npz(params_only, folder / "p.npz"),
    }
    return savers[name]()


FORMATS = ["msgpack-variables", "msgpack-frozendict", "msgpack-trainstate", "msgpack-bare-params",
           "orbax-standard", "orbax-trainstate", "orbax-manager", "legacy-msgpack", "legacy-orbax", "npz"]
EXPECTED_FORMAT = {"orbax": "orbax", "legacy-orbax": "orbax", "npz": "npz"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_mnist_cnn_from_every_format_matches_jax(tmp_path, tfjs, cnn_variables, cnn_input, fmt):
    checkpoint = _save_every_format(fmt, cnn_variables, CNN, tmp_path)
    report = to_tensorflowjs(checkpoint, tmp_path / "out")
    assert report.format == ("npz" if fmt == "npz" else "orbax" if "orbax" in fmt else "flax-msgpack")
    assert [layer.class_name for layer in report.layers] == [
        "Conv2D", "AveragePooling2D", "Conv2D", "AveragePooling2D", "Flatten", "Dense", "Dense"]
    assert report.inputs[0].shape == CNN_SHAPE
    expected = fm.run(CNN, {"params": cnn_variables["params"]}, cnn_input)
    assert_close(predict_tfjs(tfjs, tmp_path / "out", cnn_input), expected)


def test_trainstate_never_takes_optimizer_moments(tmp_path, tfjs, cnn_variables, cnn_input):
    # Adam's mu/nu have exactly the params' shapes and come first in no particular order.
    state = fm.train_state_of(CNN, cnn_variables)
    checkpoint = fm.save_msgpack(state, tmp_path / "state.msgpack")
    report = to_tensorflowjs(checkpoint, tmp_path / "out")
    assert any(n.code == "IGNORED_SUBTREE" and "opt_state" in n.message for n in report.notices)
    out = predict_tfjs(tfjs, tmp_path / "out", cnn_input)
    assert_close(out, fm.run(CNN, {"params": state.params}, cnn_input))


@pytest.mark.parametrize("step, seed", [(None, 3), (2, 2), (1, 1)])
def test_orbax_manager_steps(tmp_path, tfjs, cnn_input, step, seed):
    trees = {s: {"params": fm.init(CNN, CNN_SHAPE, seed=s)["params"]} for s in (1, 2, 3)}
    root = fm.save_orbax_manager(trees, tmp_path / "manager")
    report = to_tensorflowjs(root, tmp_path / "out", step=step)
    assert report.step == seed
    assert_close(predict_tfjs(tfjs, tmp_path / "out", cnn_input), fm.run(CNN, trees[seed], cnn_input))


@pytest.mark.parametrize("use_orbax", [False, True], ids=["msgpack", "orbax"])
def test_legacy_checkpoints_pick_newest_or_given_step(tmp_path, tfjs, cnn_input, use_orbax):
    folder = tmp_path / "legacy"
    old = {"params": fm.init(CNN, CNN_SHAPE, seed=5)["params"]}
    new = {"params": fm.init(CNN, CNN_SHAPE, seed=6)["params"]}
    fm.save_legacy(old, folder, (10,), use_orbax)
    fm.save_legacy(new, folder, (20,), use_orbax)
    to_tensorflowjs(folder, tmp_path / "newest")
    to_tensorflowjs(folder, tmp_path / "step10", step=10)
    assert_close(predict_tfjs(tfjs, tmp_path / "newest", cnn_input), fm.run(CNN, new, cnn_input))
    assert_close(predict_tfjs(tfjs, tmp_path / "step10", cnn_input), fm.run(CNN, old, cnn_input))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_non_float32_checkpoints_are_converted(tmp_path, tfjs, cnn_variables, cnn_input, dtype):
    import ml_dtypes

    target = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a).astype(target), cnn_variables["params"])
    checkpoint = fm.save_msgpack({"params": params}, tmp_path / "p.msgpack")
    report = to_tensorflowjs(checkpoint, tmp_path / "out")
    assert any(n.code == "DTYPE_CONVERTED" and dtype in n.message for n in report.notices)
    as_float32 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
    assert_close(predict_tfjs(tfjs, tmp_path / "out", cnn_input), fm.run(CNN, {"params": as_float32}, cnn_input))


def test_max_pool_option(tmp_path, tfjs, cnn_input):
    module = fm.CNN(pool="max")
    variables = fm.init(module, CNN_SHAPE)
    checkpoint = fm.save_msgpack(variables, tmp_path / "p.msgpack")
    report = to_tensorflowjs(checkpoint, tmp_path / "out", pool="max")
    assert report.layers[1].class_name == "MaxPooling2D"
    assert_close(predict_tfjs(tfjs, tmp_path / "out", cnn_input), fm.run(module, variables, cnn_input))
