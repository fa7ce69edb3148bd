"""Properties of what the writer puts on disk: shards, quantization, metadata, determinism, safety."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from tests import flax_models as fm
from tests.conftest import ROOT, assert_close, predict_tfjs
from writer import ConversionError, to_tensorflowjs
from writer.model_json import validate_model_json
from writer.quantize import quantize

CNN = fm.CNN()
SHAPE = (28, 28, 1)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn")
    variables = fm.init(CNN, SHAPE)
    return fm.save_msgpack(variables, folder / "cnn.msgpack"), variables


def _files(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_model_json_is_valid_and_complete(tmp_path, cnn):
    to_tensorflowjs(cnn[0], tmp_path / "out")
    document = json.loads((tmp_path / "out" / "model.json").read_text())
    validate_model_json(document)
    names = [w["name"] for w in document["weightsManifest"][0]["weights"]]
    assert names == ["Conv_0/kernel", "Conv_0/bias", "Conv_1/kernel", "Conv_1/bias",
                     "Dense_0/kernel", "Dense_0/bias", "Dense_1/kernel", "Dense_1/bias"]
    total = sum(int(np.prod(w["shape"])) * 4 for w in document["weightsManifest"][0]["weights"])
    assert sum((tmp_path / "out" / p).stat().st_size for p in document["weightsManifest"][0]["paths"]) == total


def test_tensor_spanning_shards_loads(tmp_path, tfjs, cnn):
    # 4096-byte shards (the minimum): the larger kernels span several files.
    report = to_tensorflowjs(cnn[0], tmp_path / "out", weight_shard_size_bytes=4096)
    sizes = [(tmp_path / "out" / name).stat().st_size for name in report.shards]
    assert len(report.shards) > 2 and set(sizes[:-1]) == {4096}
    assert report.shards[0] == f"group1-shard1of{len(report.shards)}.bin"
    x = fm.inputs(SHAPE)
    assert_close(predict_tfjs(tfjs, tmp_path / "out", x), fm.run(CNN, cnn[1], x))


@pytest.mark.parametrize("dtype, max_bytes_ratio", [("float16", 0.55), ("uint16", 0.55), ("uint8", 0.30)])
def test_quantized_models_load_and_stay_close(tmp_path, tfjs, cnn, dtype, max_bytes_ratio):
    full = to_tensorflowjs(cnn[0], tmp_path / "full")
    small = to_tensorflowjs(cnn[0], tmp_path / dtype, quantize=dtype)
    weight_bytes = lambda r: sum((r.out_dir / s).stat().st_size for s in r.shards)  # noqa: E731
    assert weight_bytes(small) <= max_bytes_ratio * weight_bytes(full)
    x = fm.inputs(SHAPE)
    expected = fm.run(CNN, cnn[1], x)
    out = predict_tfjs(tfjs, tmp_path / dtype, x)
    tolerance = {"float16": 2e-3, "uint16": 2e-3, "uint8": 5e-2}[dtype]
    assert np.max(np.abs(out - expected)) <= tolerance * max(1.0, np.abs(expected).max())
    assert np.max(np.abs(out - expected)) > 0  # quantization really happened


def test_quantized_weights_decode_exactly_as_tfjs_would(tmp_path, cnn):
    # tfjs: value = q * scale + min, in double, stored as float32.
    values = np.random.RandomState(0).normal(size=1000).astype(np.float32)
    for dtype in ("uint8", "uint16"):
        stored, meta = quantize(values, dtype)
        decoded = (stored.astype(np.float64) * meta["scale"] + meta["min"]).astype(np.float32)
        assert np.max(np.abs(decoded - values)) <= meta["scale"] / 2 + 1e-7
        zero_level = -meta["min"] / meta["scale"]
        assert abs(zero_level - round(zero_level)) < 1e-9  # 0.0 exactly representable
    stored, meta = quantize(np.full(5, 0.25, np.float32), "uint8")
    assert stored.tolist() == [0] * 5 and meta["min"] == 0.25


def test_quantize_only_matching_weights(tmp_path, cnn):
    report = to_tensorflowjs(cnn[0], tmp_path / "out", quantize="uint8", quantize_weights=("Dense*/kernel",))
    weights = json.loads((tmp_path / "out" / "model.json").read_text())["weightsManifest"][0]["weights"]
    quantized = [w["name"] for w in weights if "quantization" in w]
    assert quantized == ["Dense_0/kernel", "Dense_1/kernel"] and report.quantized_weights == 2


def test_metadata_round_trip_through_tfjs(tmp_path, tfjs, cnn):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"names": [str(d) for d in range(10)], "ü": [1, 2.5, None, True]}))
    to_tensorflowjs(cnn[0], tmp_path / "out", metadata={"labels": json.loads(labels.read_text())})
    metadata = tfjs.summary(tmp_path / "out")["userDefinedMetadata"]
    assert metadata["labels"] == json.loads(labels.read_text())
    provenance = metadata["flax2tfjs"]
    assert provenance["source"]["name"] == "cnn.msgpack"
    assert provenance["source"]["sha256"] == hashlib.sha256(cnn[0].read_bytes()).hexdigest()
    assert provenance["inputs"] == [{"name": "input", "shape": [28, 28, 1], "dtype": "float32"}]
    assert {n["code"] for n in provenance["notices"]} >= {"INPUT_SHAPE", "POOLING", "ACTIVATION"}


def test_same_input_gives_byte_identical_output(tmp_path, cnn):
    to_tensorflowjs(cnn[0], tmp_path / "a", quantize="uint8", weight_shard_size_bytes=5001)
    to_tensorflowjs(cnn[0], tmp_path / "b", quantize="uint8", weight_shard_size_bytes=5001)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_non_empty_output_is_refused_and_left_untouched(tmp_path, cnn):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(cnn[0], out)
    assert err.value.code == "OUTPUT_NOT_EMPTY"
    assert _files(out) == {"keep.txt": hashlib.sha256(b"mine").hexdigest()}
    with pytest.raises(ConversionError) as err:  # --force replaces only an earlier conversion
        to_tensorflowjs(cnn[0], out, force=True)
    assert err.value.code == "OUTPUT_NOT_REPLACEABLE" and "keep.txt" in err.value.message
    assert _files(out) == {"keep.txt": hashlib.sha256(b"mine").hexdigest()}
    (out / "keep.txt").unlink()
    to_tensorflowjs(cnn[0], out)
    to_tensorflowjs(cnn[0], out, force=True)
    assert "model.json" in _files(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging left


def test_failed_conversion_leaves_previous_output_and_no_debris(tmp_path, cnn):
    out = tmp_path / "out"
    to_tensorflowjs(cnn[0], out)
    before = _files(out)
    bad = tmp_path / "nan.msgpack"
    variables = fm.init(CNN, SHAPE)
    kernel = np.array(variables["params"]["Dense_1"]["kernel"])
    kernel[0, 0] = np.nan
    variables["params"]["Dense_1"]["kernel"] = kernel
    fm.save_msgpack(variables, bad)
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(bad, out, force=True)
    assert err.value.code == "NONFINITE_WEIGHT" and "params/Dense_1/kernel" in err.value.message
    assert _files(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "writer", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_prints_a_concise_report(tmp_path, cnn):
    result = _cli(cnn[0], tmp_path / "out")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for expected in ("Conv_0", "AveragePooling2D", "Dense_1", "parameters", "shard", "assumption[INPUT_SHAPE]", "done in"):
        assert expected in text
    assert "Traceback" not in result.stderr


def _file(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make_input, code", [
    (lambda d: d / "missing.msgpack", "CHECKPOINT_NOT_FOUND"),
    (lambda d: _file(d / "empty.msgpack", b""), "EMPTY_CHECKPOINT"),
    (lambda d: _file(d / "m.pkl", b"\x80\x04\x95\x00"), "PICKLE_REFUSED"),
    (lambda d: _file(d / "i.png", b"\x89PNG\r\n\x1a\n...."), "NOT_A_CHECKPOINT"),
    (lambda d: (d / "empty_dir").mkdir() or d / "empty_dir", "EMPTY_CHECKPOINT"),
], ids=["missing", "empty-file", "pickle", "png", "empty-folder"])
def test_cli_bad_input_gives_code_hint_and_exit_2(tmp_path, make_input, code):
    result = _cli(make_input(tmp_path), tmp_path / "out")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"error[{code}]: ") and lines[1].startswith("hint: ")
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_cli_bad_option_is_a_clear_error(tmp_path, cnn):
    result = _cli(cnn[0], tmp_path / "out", "--input-shape", "a,b")
    assert result.returncode == 2 and result.stderr.startswith("error[BAD_OPTION]:")
    result = _cli(cnn[0], tmp_path / "out", "--input-shape", "32,32,1")
    assert result.returncode == 2 and result.stderr.startswith("error[INPUT_SHAPE_MISMATCH]:")
    assert "params/Dense_0" in result.stderr
