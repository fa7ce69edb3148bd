"""The official `tensorflowjs` Python package (tf-keras 2.19) loads what we write and predicts like JAX.

It runs in its own virtualenv (.venv-tfjs, made by scripts/setup_tfjs_venv.sh: TF needs
numpy < 2.2); one subprocess handles every model so TensorFlow is imported once.
"""
from __future__ import annotations

import json
import os
import subprocess

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from tests import flax_models as fm
from tests.conftest import ROOT, assert_close
from writer import to_tensorflowjs

OFFICIAL_PY = ROOT / ".venv-tfjs" / "bin" / "python"
OFFICIAL_SCRIPT = ROOT / "tests" / "official_tfjs" / "load_and_predict.py"


class Functional(nn.Module):
    """Residual add/subtract, gelu (tanh form, composed), SAME average pooling, global mean."""

    @nn.compact
    def __call__(self, x):
        y = jax.nn.gelu(nn.Conv(4, (3, 3), padding="VALID")(x))
        y = nn.avg_pool(y, (2, 2), padding="SAME")
        z = nn.Conv(4, (1, 1))(y)
        y = y + jax.nn.silu(z) - z
        return nn.Dense(3)(jnp.mean(y, axis=(1, 2)))


def _jobs(tmp_path):
    from examples.mnist_data import load_mnist
    from examples.train_mnist import CNN as MnistCNN

    digits = load_mnist()[2][:16]
    ckpt = ROOT / "examples" / "mnist_ckpt"
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        mnist_params = checkpointer.restore(ckpt.absolute())["params"]
    mnist_expected = np.asarray(MnistCNN().apply({"params": mnist_params}, digits))
    mlp = fm.MLP((32, 16, 10))
    mlp_vars = fm.init(mlp, (20,))
    mlp_x = fm.inputs((20,), batch=6)
    func = Functional()
    func_vars = fm.init(func, (9, 9, 2))
    func_x = fm.inputs((9, 9, 2), batch=3)
    cases = {
        "mnist-inferred": (lambda out: to_tensorflowjs(ckpt, out), digits, mnist_expected, 1e-5),
        "mnist-traced": (lambda out: to_tensorflowjs(ckpt, out, module=MnistCNN(), input_shape=(28, 28, 1)),
                         digits, mnist_expected, 1e-5),
        "mnist-uint8": (lambda out: to_tensorflowjs(ckpt, out, quantize="uint8"), digits, mnist_expected, 0.1),
        "mlp-msgpack-sharded": (lambda out: to_tensorflowjs(fm.save_msgpack(mlp_vars, tmp_path / "mlp.msgpack"), out,
                                                            weight_shard_size_bytes=4099),  # 5,480 bytes: 2 shards
                                mlp_x, fm.run(mlp, mlp_vars, mlp_x), 1e-5),
        "functional-traced": (lambda out: to_tensorflowjs(func, out, variables=func_vars, input_shape=(9, 9, 2)),
                              func_x, fm.run(func, func_vars, func_x), 1e-5),
    }
    jobs, checks = [], []
    for name, (convert, x, expected, rtol) in cases.items():
        out = tmp_path / name
        convert(out)
        np.save(tmp_path / f"{name}_x.npy", x)
        jobs.append({"model": str(out), "inputs": [str(tmp_path / f"{name}_x.npy")],
                     "outputs": [str(tmp_path / f"{name}_y.npy")]})
        checks.append((name, tmp_path / f"{name}_y.npy", expected, rtol))
    return jobs, checks


def test_official_tensorflowjs_loads_our_models_and_predicts_like_jax(tmp_path):
    if os.environ.get("FLAX2TFJS_SKIP_OFFICIAL") == "1":
        pytest.skip("FLAX2TFJS_SKIP_OFFICIAL=1")
    if not OFFICIAL_PY.exists():
        pytest.fail(f"{OFFICIAL_PY} not found: run scripts/setup_tfjs_venv.sh")
    jobs, checks = _jobs(tmp_path)
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([str(OFFICIAL_PY), str(OFFICIAL_SCRIPT), "--jobs", str(tmp_path / "jobs.json")],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    failed = [line for line in lines if not line["ok"]]
    assert proc.returncode == 0 and len(lines) == len(jobs) and not failed, proc.stdout + proc.stderr[-3000:]
    for name, path, expected, rtol in checks:
        got = np.load(path)
        if rtol < 0.01:
            assert_close(got, expected, rtol=rtol)
        else:  # quantized: close, and the same predicted classes almost everywhere
            assert np.mean(np.argmax(got, 1) == np.argmax(expected, 1)) >= 0.9, name
