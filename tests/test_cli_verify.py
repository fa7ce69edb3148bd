"""`python -m writer verify` (and `convert --verify`): real TF.js in Node against JAX, JSON against its schema."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import jsonschema
import numpy as np
import pytest

from tests import flax_models as fm
from tests.conftest import ROOT
from writer import to_tensorflowjs
from writer.cli import main

SCHEMA = json.loads((ROOT / "schemas" / "verify.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
CNN = fm.CNN()
SHAPE = (28, 28, 1)
MNIST = ROOT / "examples" / "mnist_ckpt"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small CNN checkpoint, its conversion and its variables."""
    folder = tmp_path_factory.mktemp("verify")
    variables = fm.init(CNN, SHAPE, seed=3)
    checkpoint = fm.save_msgpack({"params": variables["params"]}, folder / "cnn.msgpack")
    to_tensorflowjs(checkpoint, folder / "out")
    return checkpoint, folder / "out", variables


def _verify_json(capsys, *args, status=0) -> dict:
    assert main(["verify", *map(str, args), "--json"]) == status
    document = json.loads(capsys.readouterr().out)
    VALIDATOR.validate(document)
    return document


def _labelled_data(path, variables, count=40, wrong=5):
    """Inputs and labels: JAX's own predictions with the first ``wrong`` labels changed."""
    x = fm.inputs(SHAPE, batch=count, seed=11)
    predicted = np.argmax(fm.run(CNN, {"params": variables["params"]}, x), axis=-1)
    y = predicted.copy()
    y[:wrong] = (y[:wrong] + 1) % 10
    np.savez(path, x=x, y=y)
    return x, y, float(np.mean(predicted == y))


def test_verify_passes_on_a_correct_conversion(tmp_path, capsys, model):
    checkpoint, out, variables = model
    x, y, expected_accuracy = _labelled_data(tmp_path / "data.npz", variables)
    doc = _verify_json(capsys, out, checkpoint, "--data", tmp_path / "data.npz")
    assert doc["passed"] and doc["failures"] == []
    assert doc["reference"] == "template" and doc["backend"] == "wasm"
    assert doc["inputs"] == {"source": "data", "path": str(tmp_path / "data.npz"), "seed": None,
                             "samples": len(x), "shapes": [list(SHAPE)]}
    assert doc["output_shapes"] == [[10]]
    scale = max(1.0, float(np.max(np.abs(fm.run(CNN, {"params": variables["params"]}, x)))))
    assert doc["scale"] == pytest.approx(scale)
    assert 0 <= doc["max_abs_error"] <= 1e-4 * scale and doc["mse"] <= doc["max_abs_error"] ** 2
    assert doc["top1_agreement"] == 1.0
    assert doc["accuracy"] == pytest.approx(expected_accuracy) and doc["reference_accuracy"] == pytest.approx(expected_accuracy)
    assert doc["weights"] == {"checked": 8, "mismatches": []}
    files = [out / "model.json", *out.glob("*.bin")]
    assert doc["model_bytes"] == sum(f.stat().st_size for f in files)
    assert doc["load_ms"] > 0 and doc["predict_ms"] > 0 and doc["predict_runs"] == 20
    assert doc["tfjs_version"] == "4.22.0"


def test_verify_text_report(capsys, model):
    checkpoint, out, _ = model
    assert main(["verify", str(out), str(checkpoint), "--samples", "8", "--backend", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "\x1b[" not in text  # captured, not a terminal: no colours
    for expected in ("max abs error", "mean squared error", "top-1 agreement", "TF.js load", "predict latency",
                     "model size", "8 random samples (seed 0)", "cpu backend"):
        assert expected in text
    assert re.search(r"weights checked +8/8 +byte-identical to the checkpoint", text)
    assert text.rstrip().splitlines()[-1].startswith("PASS in ")


def _flip_bytes_in(out, weight: str, count: int = 8) -> None:
    """XOR ``count`` bytes in the middle of ``weight``'s bytes in the shards."""
    document = json.loads((out / "model.json").read_text())
    offset = 0
    for spec in document["weightsManifest"][0]["weights"]:
        size = int(np.prod(spec["shape"])) * 4
        if spec["name"] == weight:
            start = offset + size // 2
            break
        offset += size
    shard = out / document["weightsManifest"][0]["paths"][0]  # one shard for this small model
    data = bytearray(shard.read_bytes())
    for i in range(start, start + count):
        data[i] ^= 0x5A
    shard.write_bytes(bytes(data))


def test_verify_fails_on_a_damaged_shard(tmp_path, capsys, model):
    checkpoint, good, _ = model
    out = tmp_path / "damaged"
    to_tensorflowjs(checkpoint, out)
    _flip_bytes_in(out, "Dense_0/kernel")
    assert main(["verify", str(out), str(checkpoint)]) == 1
    text = capsys.readouterr().out
    assert "weight Dense_0/kernel: 2 of" in text  # 8 bytes = 2 float32 values
    assert "differ from the checkpoint" in text and re.search(r"weights checked +7/8 +MISMATCH", text)
    last = text.rstrip().splitlines()[-1]
    assert last.startswith("FAIL: ") and "1 weight(s) in the shards differ from the checkpoint" in last
    doc = _verify_json(capsys, out, checkpoint, status=1)
    assert not doc["passed"] and doc["failures"]
    assert [(m["name"], m["problem"], m["differing"]) for m in doc["weights"]["mismatches"]] == [
        ("Dense_0/kernel", "differs", 2)]
    # The same command on the untouched conversion passes: the damage is what failed it.
    assert _verify_json(capsys, good, checkpoint)["passed"]


def test_verify_fails_when_tfjs_cannot_load(tmp_path, capsys, model):
    checkpoint, _, _ = model
    out = tmp_path / "short"
    to_tensorflowjs(checkpoint, out)
    shard = next(out.glob("*.bin"))
    shard.write_bytes(shard.read_bytes()[:-8])
    assert main(["verify", str(out), str(checkpoint)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error[TFJS_FAILED]: TF.js could not load or run") and "hint:" in err


def test_verify_with_the_module_as_reference(tmp_path, capsys, model):
    checkpoint, out, _ = model
    doc = _verify_json(capsys, out, checkpoint, "--module", "tests/flax_models.py:CNN", "--samples", "16")
    assert doc["passed"] and doc["reference"] == "module"
    assert "CNN (Linen module tests/flax_models.py:CNN)" in doc["reference_description"]
    # Converted from the template, checked against the module: outputs compared, weights matched by name.
    assert doc["weights"]["checked"] == 8
    assert any(n["code"] == "TOPOLOGY_DIFFERS" for n in doc["notices"])


def test_verify_takes_the_convert_input_flags(capsys, model):
    """A user's convert flags copied to verify are accepted (and checked against model.json)."""
    checkpoint, out, _ = model
    doc = _verify_json(capsys, out, checkpoint, "--input-shape", "28,28,1", "--input-dtype", "float32",
                       "--samples", "4")
    assert doc["passed"] and doc["inputs"]["shapes"] == [[28, 28, 1]]


def test_verify_mnist_with_labels(tmp_path, capsys):
    """The bundled checkpoint, converted, keeps its recorded accuracy on the 2,000 held-out digits in TF.js."""
    import orbax.checkpoint as ocp

    from examples.mnist_data import save_test_npz
    from examples.train_mnist import accuracy

    data = save_test_npz(tmp_path / "mnist_test.npz")
    out = tmp_path / "mnist"
    assert main(["convert", str(MNIST), str(out), "--quiet"]) == 0
    doc = _verify_json(capsys, out, MNIST, "--data", data, "--module", "examples/train_mnist.py:CNN")
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(MNIST.absolute())["params"]
    with np.load(data) as arrays:
        expected = accuracy(params, arrays["x"], arrays["y"])
    recorded = json.loads((ROOT / "examples" / "mnist_ckpt_accuracy.json").read_text())["test_accuracy"]
    assert doc["passed"] and doc["inputs"]["samples"] == 2000
    assert doc["reference_accuracy"] == pytest.approx(expected)
    assert doc["accuracy"] == pytest.approx(expected) == pytest.approx(recorded)
    assert doc["top1_agreement"] == 1.0


def test_convert_with_verify(tmp_path, capsys, model):
    checkpoint, _, variables = model
    _labelled_data(tmp_path / "data.npz", variables)
    status = main(["convert", str(checkpoint), str(tmp_path / "out"), "--verify", "--data", str(tmp_path / "data.npz"),
                   "--json"])
    assert status == 0
    document = json.loads(capsys.readouterr().out)
    assert document["layers"][0]["class_name"] == "Conv2D"  # the convert report, unchanged
    VALIDATOR.validate(document["verify"])
    assert document["verify"]["passed"] and document["verify"]["accuracy"] is not None


def test_convert_verify_runs_from_the_command_line(tmp_path, model):
    checkpoint, _, _ = model
    result = subprocess.run([sys.executable, "-m", "writer", str(checkpoint), str(tmp_path / "out"), "--verify",
                             "--samples", "8"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "converted " in result.stdout and "\nverify " in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("PASS")
    assert result.stderr == ""  # no progress bar on a pipe


def test_verify_quantized_model_uses_the_quantization_tolerance(tmp_path, capsys, model):
    checkpoint, _, variables = model
    out = tmp_path / "q8"
    to_tensorflowjs(checkpoint, out, quantize="uint8")
    doc = _verify_json(capsys, out, checkpoint, "--samples", "16")
    assert doc["tolerance"] == 5e-2 and doc["passed"]
    assert doc["weights"] == {"checked": 8, "mismatches": []}  # quantized bytes re-derived exactly
    assert doc["max_abs_error"] > 1e-6  # quantization does change the outputs
    tight = _verify_json(capsys, out, checkpoint, "--samples", "16", "--tolerance", "1e-7", status=1)
    assert not tight["passed"] and "exceeds the tolerance" in tight["failures"][0]


def test_verify_nnx_module(tmp_path, capsys):
    import orbax.checkpoint as ocp
    from flax import nnx

    code = tmp_path / "nnx_model.py"
    code.write_text(
        "from flax import nnx\n\n"
        "class MLP(nnx.Module):\n"
        "    def __init__(self, rngs: nnx.Rngs):\n"
        "        self.fc1 = nnx.Linear(6, 16, rngs=rngs)\n"
        "        self.fc2 = nnx.Linear(16, 3, rngs=rngs)\n\n"
        "    def __call__(self, x):\n"
        "        return self.fc2(nnx.relu(self.fc1(x)))\n")
    import importlib.util

    spec = importlib.util.spec_from_file_location("nnx_model_for_test", code)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trained = module.MLP(nnx.Rngs(42))  # not the Rngs(0) the CLI builds: values must come from the checkpoint
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save((tmp_path / "ck").absolute(), nnx.state(trained))
    spec_arg = f"{code}:MLP"
    assert main(["convert", str(tmp_path / "ck"), str(tmp_path / "out"), "--module", spec_arg, "--input-shape", "6",
                 "--quiet"]) == 0
    x = np.random.RandomState(0).uniform(-1, 1, (10, 6)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    doc = _verify_json(capsys, tmp_path / "out", tmp_path / "ck", "--module", spec_arg, "--data", tmp_path / "x.npz")
    assert doc["passed"] and "NNX module" in doc["reference_description"]
    assert doc["weights"] == {"checked": 4, "mismatches": []}
    assert doc["worst"]["jax"] == pytest.approx(float(np.asarray(trained(jnp.asarray(x)))[
        doc["worst"]["sample"], doc["worst"]["index"][0]]), rel=1e-5)


@pytest.mark.parametrize("args, code", [
    (["--pool", "max"], "VERIFY_TOPOLOGY_MISMATCH"),
    (["--activation", "tanh"], "VERIFY_TOPOLOGY_MISMATCH"),
    (["--input-shape", "32,32,1"], "INPUT_SHAPE_MISMATCH"),
    (["--input-dtype", "int32"], "INPUT_DTYPE_MISMATCH"),
    (["--data", "missing.npz"], "DATA_NOT_FOUND"),
    (["--backend", "webgl"], "BAD_OPTION"),
    (["--samples", "0"], "BAD_OPTION"),
], ids=["pool", "activation", "input-shape", "input-dtype", "no-data", "backend", "samples"])
def test_verify_usage_errors(capsys, model, args, code):
    checkpoint, out, _ = model
    assert main(["verify", str(out), str(checkpoint), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error[{code}]") and "\nhint: " in err


@pytest.mark.parametrize("arrays, code", [
    ({"inputs": np.zeros((2, 28, 28, 1))}, "DATA_INVALID"),
    ({"x": np.zeros((2, 10, 10, 1))}, "DATA_SHAPE_MISMATCH"),
    ({"x": np.zeros((2, 28, 28, 1)), "y": np.zeros(3)}, "DATA_INVALID"),
], ids=["no-x", "wrong-shape", "label-count"])
def test_verify_bad_data(tmp_path, capsys, model, arrays, code):
    checkpoint, out, _ = model
    np.savez(tmp_path / "d.npz", **arrays)
    assert main(["verify", str(out), str(checkpoint), "--data", str(tmp_path / "d.npz")]) == 2
    assert capsys.readouterr().err.startswith(f"error[{code}]")


def test_verify_reshapes_flat_data(tmp_path, capsys, model):
    checkpoint, out, variables = model
    x = fm.inputs(SHAPE, batch=6, seed=4)
    np.savez(tmp_path / "flat.npz", x=x.reshape(6, 784))
    doc = _verify_json(capsys, out, checkpoint, "--data", tmp_path / "flat.npz")
    assert doc["passed"] and doc["accuracy"] is None
    assert any(n["code"] == "DATA_RESHAPED" for n in doc["notices"])


def test_verify_schema_rejects_a_wrong_document(capsys, model):
    checkpoint, out, _ = model
    doc = _verify_json(capsys, out, checkpoint, "--samples", "4")
    doc["failures"] = ["made up"]  # passed with a failure listed
    assert list(VALIDATOR.iter_errors(doc))
    doc["failures"], doc["backend"] = [], "webgl"
    assert list(VALIDATOR.iter_errors(doc))


def test_verify_of_a_traced_model_needs_the_module(tmp_path, capsys, model):
    checkpoint, _, _ = model
    out = tmp_path / "traced"
    assert main(["convert", str(checkpoint), str(out), "--module", "tests/flax_models.py:CNN", "--quiet"]) == 0
    assert main(["verify", str(out), str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error[VERIFY_NEEDS_MODULE]") and "--module" in err
    doc = _verify_json(capsys, out, checkpoint, "--module", "tests/flax_models.py:CNN", "--samples", "8")
    assert doc["passed"] and not any(n["code"] == "TOPOLOGY_DIFFERS" for n in doc["notices"])
    assert doc["weights"]["checked"] == 8
