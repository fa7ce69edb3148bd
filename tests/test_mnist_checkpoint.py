"""The bundled MNIST checkpoint: converted per quantization mode, scored in real TF.js on real digits."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import ROOT, assert_close, predict_tfjs
from writer import to_tensorflowjs

CKPT = ROOT / "examples" / "mnist_ckpt"


@pytest.fixture(scope="module")
def digits():
    from examples.mnist_data import load_mnist

    _, _, x_test, y_test = load_mnist()
    assert x_test.shape == (2000, 28, 28, 1)
    return x_test, y_test


@pytest.fixture(scope="module")
def jax_logits(digits):
    import orbax.checkpoint as ocp

    from examples.train_mnist import mnist_cnn_apply

    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(CKPT.absolute())["params"]
    return np.asarray(mnist_cnn_apply(params, digits[0]))


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tfjs, digits):
    folder = tmp_path_factory.mktemp("mnist")
    results = {}
    for mode in (None, "float16", "uint16", "uint8"):
        out = folder / (mode or "float32")
        report = to_tensorflowjs(CKPT, out, quantize=mode)
        # wasm: the same tfjs kernels users run, ~15x faster than the pure-JS cpu backend here.
        logits = predict_tfjs(tfjs, out, digits[0], backend="wasm")
        results[mode or "float32"] = {
            "bytes": sum((out / s).stat().st_size for s in report.shards),
            "accuracy": float(np.mean(np.argmax(logits, 1) == digits[1])),
            "logits": logits,
        }
    print("\nMNIST in TF.js:", json.dumps({k: {"bytes": v["bytes"], "accuracy": v["accuracy"]} for k, v in results.items()}))
    return results


def test_float32_predicts_like_jax_on_2000_real_digits(converted, jax_logits, digits):
    assert_close(converted["float32"]["logits"], jax_logits)
    jax_accuracy = float(np.mean(np.argmax(jax_logits, 1) == digits[1]))
    assert converted["float32"]["accuracy"] == jax_accuracy
    recorded = json.loads((ROOT / "examples" / "mnist_ckpt_accuracy.json").read_text())["test_accuracy"]
    assert abs(jax_accuracy - recorded) < 1e-3


def test_cpu_backend_agrees_with_wasm(tfjs, converted, digits, tmp_path):
    # The 2,000-digit runs use wasm; the pure-JS cpu backend must give the same logits.
    out = tmp_path / "float32"
    to_tensorflowjs(CKPT, out)
    cpu = predict_tfjs(tfjs, out, digits[0][:100], backend="cpu")
    assert_close(cpu, converted["float32"]["logits"][:100])


def test_uint8_keeps_accuracy_within_1_point_at_30_percent_of_bytes(converted):
    assert converted["uint8"]["bytes"] <= 0.30 * converted["float32"]["bytes"]
    assert converted["uint8"]["accuracy"] >= converted["float32"]["accuracy"] - 0.01


@pytest.mark.parametrize("mode", ["float16", "uint16"])
def test_16_bit_keeps_accuracy_within_0_2_points_at_55_percent(converted, mode):
    assert converted[mode]["bytes"] <= 0.55 * converted["float32"]["bytes"]
    assert converted[mode]["accuracy"] >= converted["float32"]["accuracy"] - 0.002
