"""`python -m writer export-savedmodel`: a SavedModel from model.json, run in real TensorFlow, matches JAX.

TensorFlow lives in .venv-tfjs (scripts/setup_tfjs_venv.sh; TF 2.19 needs numpy < 2.2), so
these tests skip when it is absent. The "no TensorFlow" path is tested everywhere.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, assert_close
from writer.cli import main

TF_PYTHON = ROOT / ".venv-tfjs" / "bin" / "python"
MNIST = ROOT / "examples" / "mnist_ckpt"
needs_tf = pytest.mark.skipif(not TF_PYTHON.exists() or os.environ.get("FLAX2TFJS_SKIP_OFFICIAL") == "1",
                              reason="no .venv-tfjs with TensorFlow (run scripts/setup_tfjs_venv.sh)")

# Run a SavedModel on x.npy in TensorFlow, independently of writer/commands/export/savedmodel.py.
RUN_SAVED = """
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
fn = loaded.signatures["serving_default"]
(name,) = fn.structured_input_signature[1]
(out,) = fn(**{name: tf.constant(np.load(sys.argv[2]))}).values()
np.save(sys.argv[3], out.numpy())
"""


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    import orbax.checkpoint as ocp

    folder = tmp_path_factory.mktemp("savedmodel")
    assert main(["convert", str(MNIST), str(folder / "out"), "--quiet"]) == 0
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(MNIST.absolute())["params"]
    return folder, params


@needs_tf
def test_export_savedmodel_matches_jax(mnist, capsys, monkeypatch):
    from examples.mnist_data import load_mnist
    from examples.train_mnist import mnist_cnn_apply

    folder, params = mnist
    saved = folder / "saved"
    monkeypatch.chdir(folder)  # relative paths, as users type them
    status = main(["export-savedmodel", "out", "saved", "--checkpoint", str(MNIST),
                   "--tf-python", str(TF_PYTHON), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0, report
    assert report["passed"] and report["written"] and report["compared_with"] == "jax"
    assert report["tensorflow_version"].startswith("2.") and report["keras_version"].startswith("2.")
    assert (saved / "saved_model.pb").is_file() and (saved / "variables").is_dir()
    assert report["saved_bytes"] == sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
    # Independently: real digits through the SavedModel in TensorFlow vs the CNN in JAX.
    digits = load_mnist()[2][:32]
    np.save(folder / "x.npy", digits)
    run = subprocess.run([str(TF_PYTHON), "-c", RUN_SAVED, str(saved), str(folder / "x.npy"), str(folder / "y.npy")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == 0, run.stderr[-2000:]
    expected = np.asarray(mnist_cnn_apply(params, digits))
    assert_close(np.load(folder / "y.npy"), expected)


@needs_tf
def test_export_of_a_damaged_model_fails_and_writes_nothing(mnist, tmp_path, capsys):
    import shutil

    folder, _ = mnist
    bad = tmp_path / "bad"
    shutil.copytree(folder / "out", bad)
    shard = next(bad.glob("*.bin"))
    data = bytearray(shard.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):  # inside Dense_0/kernel
        data[i] ^= 0x5A
    shard.write_bytes(bytes(data))
    status = main(["export-savedmodel", str(bad), str(tmp_path / "saved"), "--checkpoint", str(MNIST),
                   "--tf-python", str(TF_PYTHON)])
    text = capsys.readouterr().out
    assert status == 1
    assert "did NOT export" in text and text.rstrip().splitlines()[-1].startswith("FAIL")
    assert not (tmp_path / "saved").exists()


def test_export_without_tensorflow_is_a_clear_error(mnist, tmp_path, capsys):
    folder, _ = mnist
    # This interpreter has no TensorFlow (the project keeps it out of its environment).
    if subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True).returncode == 0:
        pytest.skip("this interpreter has TensorFlow")
    status = main(["export-savedmodel", str(folder / "out"), str(tmp_path / "saved"), "--tf-python", sys.executable])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error[TENSORFLOW_NOT_INSTALLED]") and "flax2tfjs[tensorflow]" in err
    assert not (tmp_path / "saved").exists()
    status = main(["export-savedmodel", str(folder / "out"), str(tmp_path / "saved"), "--tf-python", "/nonexistent/py"])
    assert status == 2 and capsys.readouterr().err.startswith("error[TENSORFLOW_NOT_INSTALLED]")


def test_export_refuses_a_non_empty_destination(mnist, tmp_path, capsys):
    folder, _ = mnist
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "keep.txt").write_text("mine")
    status = main(["export-savedmodel", str(folder / "out"), str(tmp_path / "saved"), "--tf-python", "/nonexistent/py"])
    assert status == 2 and capsys.readouterr().err.startswith("error[OUTPUT_NOT_EMPTY]")
    assert (tmp_path / "saved" / "keep.txt").read_text() == "mine"
