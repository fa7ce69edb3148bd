"""Real TF.js (Node, cpu + wasm) and the official tensorflowjs package on hand-written models.

Every model here is written byte by byte from numpy (no converter code involved), so these
tests pin down the harness itself: writer/tfjs_node.py + js/tfjs_runner.mjs, and
tests/official_tfjs/load_and_predict.py. Expected outputs are numpy forward passes.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_close
from topology.vocabulary.errors import ConversionError
from writer.tfjs_node import TfjsError, TfjsRunner, TfjsTimeoutError

BACKENDS = ["cpu", "wasm"]
OFFICIAL_PY = ROOT / ".venv-tfjs" / "bin" / "python"
OFFICIAL_SCRIPT = ROOT / "tests" / "official_tfjs" / "load_and_predict.py"

rng = np.random.default_rng(20240607)


# ---------------------------------------------------------------------------------------
# Writing model.json + shards by hand


def write_model(
    out: Path,
    model_config: dict | None,
    weights: list[dict],
    shard_bytes: int | None = None,
    groups: int = 1,
    metadata: dict | None = None,
    manifest: bool = True,
) -> Path:
    """Write ``out/model.json`` and shards.

    ``weights``: ``{"name", "array"}`` (float32 stored as is) or ``{"name", "shape", "bytes",
    "quantization"}`` (already-quantized payload). The byte stream of all tensors, in list
    order, is cut every ``shard_bytes`` bytes; the tensors are dealt into ``groups`` manifest
    groups, the shard files into the same groups, keeping the global order.
    """
    out.mkdir(parents=True, exist_ok=True)
    specs, chunks = [], []
    for w in weights:
        if "quantization" in w:
            specs.append({"name": w["name"], "shape": list(w["shape"]), "dtype": "float32",
                          "quantization": w["quantization"]})
            chunks.append(w["bytes"])
        else:
            a = np.ascontiguousarray(w["array"])
            dtype = {"f": "float32", "i": "int32"}[a.dtype.kind]
            specs.append({"name": w["name"], "shape": list(a.shape), "dtype": dtype})
            chunks.append(a.astype("<f4" if dtype == "float32" else "<i4").tobytes())
    stream = b"".join(chunks)
    size = shard_bytes or max(len(stream), 1)
    pieces = [stream[i:i + size] for i in range(0, len(stream), size)] or [b""]
    names = [f"group1-shard{i + 1}of{len(pieces)}.bin" for i in range(len(pieces))]
    for name, piece in zip(names, pieces):
        (out / name).write_bytes(piece)
    spec_split = np.array_split(np.arange(len(specs)), groups)
    path_split = np.array_split(np.arange(len(names)), groups)
    doc: dict = {
        "format": "layers-model",
        "generatedBy": "hand-written test",
        "convertedBy": "tests/test_tfjs_runner.py",
        "modelTopology": {"keras_version": "2.15.0", "backend": "tensorflow",
                          "model_config": model_config},
    }
    if manifest:
        doc["weightsManifest"] = [
            {"paths": [names[i] for i in p], "weights": [specs[i] for i in s]}
            for s, p in zip(spec_split, path_split)
        ]
    if metadata is not None:
        doc["userDefinedMetadata"] = metadata
    (out / "model.json").write_text(json.dumps(doc, indent=1))
    return out


def input_layer(name: str, shape: list[int], dtype: str = "float32", functional: bool = False) -> dict:
    entry = {"class_name": "InputLayer",
             "config": {"batch_input_shape": [None, *shape], "dtype": dtype, "sparse": False,
                        "ragged": False, "name": name}}
    if functional:
        entry.update(name=name, inbound_nodes=[])
    return entry


def dense(name: str, units: int, activation: str = "linear", inbound: list | None = None) -> dict:
    entry = {"class_name": "Dense",
             "config": {"name": name, "trainable": True, "dtype": "float32", "units": units,
                        "activation": activation, "use_bias": True,
                        "kernel_initializer": {"class_name": "Zeros", "config": {}},
                        "bias_initializer": {"class_name": "Zeros", "config": {}}}}
    if inbound is not None:
        entry.update(name=name, inbound_nodes=[[[src, 0, 0, {}] for src in inbound]])
    return entry


def merge(cls: str, name: str, inbound: list[str], **config) -> dict:
    return {"class_name": cls, "name": name,
            "config": {"name": name, "trainable": True, "dtype": "float32", **config},
            "inbound_nodes": [[[src, 0, 0, {}] for src in inbound]]}


def functional(layers: list[dict], inputs: list[str], outputs: list[str]) -> dict:
    return {"class_name": "Functional",
            "config": {"name": "model", "layers": layers,
                       "input_layers": [[n, 0, 0] for n in inputs],
                       "output_layers": [[n, 0, 0] for n in outputs]}}


def randn(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


# ---------------------------------------------------------------------------------------
# Models with their numpy forward pass


def sequential_model(out: Path, **write_kw) -> tuple[Path, callable, dict]:
    """Sequential: InputLayer(4) -> Dense(5, relu) -> Dense(3)."""
    w = {"dense_1/kernel": randn(4, 5), "dense_1/bias": randn(5),
         "dense_2/kernel": randn(5, 3), "dense_2/bias": randn(3)}
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        input_layer("input_1", [4]), dense("dense_1", 5, "relu"), dense("dense_2", 3)]}}
    write_model(out, config, [{"name": k, "array": v} for k, v in w.items()], **write_kw)

    def forward(x: np.ndarray) -> np.ndarray:
        h = relu(x @ w["dense_1/kernel"] + w["dense_1/bias"])
        return h @ w["dense_2/kernel"] + w["dense_2/bias"]

    return out, forward, w


def functional_model(out: Path) -> tuple[Path, callable]:
    """Two inputs a, b (4 each): s = Dense(4)(a) + b; c = concat(s, a); outputs (Dense(2)(c), s)."""
    w = {"dense_a/kernel": randn(4, 4), "dense_a/bias": randn(4),
         "head/kernel": randn(8, 2), "head/bias": randn(2)}
    layers = [
        input_layer("in_a", [4], functional=True),
        input_layer("in_b", [4], functional=True),
        dense("dense_a", 4, inbound=["in_a"]),
        merge("Add", "add", ["dense_a", "in_b"]),
        merge("Concatenate", "concat", ["add", "in_a"], axis=-1),
        dense("head", 2, inbound=["concat"]),
    ]
    write_model(out, functional(layers, ["in_a", "in_b"], ["head", "add"]),
                [{"name": k, "array": v} for k, v in w.items()])

    def forward(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
        s = a @ w["dense_a/kernel"] + w["dense_a/bias"] + b
        c = np.concatenate([s, a], axis=-1)
        return [c @ w["head/kernel"] + w["head/bias"], s]

    return out, forward


def conv2d_nhwc_same(x: np.ndarray, k: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3x3 stride-1 'same' convolution (TF/Keras cross-correlation), NHWC x, HWIO k."""
    kh, kw = k.shape[:2]
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    n, h, wd, _ = x.shape
    y = np.zeros((n, h, wd, k.shape[3]), np.float64)
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("nhwc,co->nhwo", xp[:, i:i + h, j:j + wd, :], k[i, j])
    return (y + b).astype(np.float32)


def conv_model(out: Path) -> tuple[Path, callable]:
    """Conv2D(3, 3x3, same, relu) on 5x5x2 -> Flatten -> Dense(2)."""
    w = {"conv/kernel": randn(3, 3, 2, 3), "conv/bias": randn(3),
         "out/kernel": randn(75, 2), "out/bias": randn(2)}
    conv = {"class_name": "Conv2D",
            "config": {"name": "conv", "trainable": True, "dtype": "float32", "filters": 3,
                       "kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
                       "data_format": "channels_last", "dilation_rate": [1, 1],
                       "activation": "relu", "use_bias": True}}
    flatten = {"class_name": "Flatten",
               "config": {"name": "flatten", "trainable": True, "dtype": "float32",
                          "data_format": "channels_last"}}
    config = {"class_name": "Sequential", "config": {"name": "cnn", "layers": [
        input_layer("image", [5, 5, 2]), conv, flatten, dense("out", 2)]}}
    write_model(out, config, [{"name": k, "array": v} for k, v in w.items()])

    def forward(x: np.ndarray) -> np.ndarray:
        h = relu(conv2d_nhwc_same(x, w["conv/kernel"], w["conv/bias"]))
        return h.reshape(len(x), -1) @ w["out/kernel"] + w["out/bias"]

    return out, forward


# ---------------------------------------------------------------------------------------
# Predictions


@pytest.mark.parametrize("backend", BACKENDS)
def test_sequential_dense_relu_dense(tfjs, tmp_path, backend):
    model, forward, _ = sequential_model(tmp_path / "seq")
    x = randn(7, 4)
    res = tfjs.predict(model, x, backend=backend, repeat=3)
    assert res.backend == backend
    assert len(res.outputs) == 1 and res.outputs[0].dtype == np.float32
    assert_close(res.outputs[0], forward(x))
    assert len(res.predict_ms) == 3 and all(t >= 0 for t in res.predict_ms)
    assert res.load_ms > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_two_inputs_add_concat_two_outputs(tfjs, tmp_path, backend):
    model, forward = functional_model(tmp_path / "func")
    a, b = randn(3, 4), randn(3, 4)
    res = tfjs.predict(model, [a, b], backend=backend)
    expected = forward(a, b)
    assert [o.shape for o in res.outputs] == [(3, 2), (3, 4)]
    for got, want in zip(res.outputs, expected):
        assert_close(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_model(tfjs, tmp_path, backend):
    model, forward = conv_model(tmp_path / "cnn")
    x = randn(2, 5, 5, 2)
    assert_close(tfjs.predict(model / "model.json", x, backend=backend).output, forward(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_int32_input_embedding(tfjs, tmp_path, backend):
    table = randn(6, 2)
    emb = {"class_name": "Embedding",
           "config": {"name": "emb", "input_dim": 6, "output_dim": 2, "dtype": "float32",
                      "embeddings_initializer": {"class_name": "Zeros", "config": {}}}}
    flatten = {"class_name": "Flatten", "config": {"name": "flat"}}
    config = {"class_name": "Sequential", "config": {"name": "e", "layers": [
        input_layer("ids", [3], dtype="int32"), emb, flatten]}}
    write_model(tmp_path, config, [{"name": "emb/embeddings", "array": table}])
    ids = rng.integers(0, 6, size=(4, 3))  # int64: sent as int32
    assert_close(tfjs.predict(tmp_path, ids, backend=backend).output, table[ids].reshape(4, 6))


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensor_spanning_two_shards_and_groups(tfjs, tmp_path, backend):
    # 30-byte shards: odd offsets, every kernel crosses at least one file boundary,
    # and tensors are dealt into two manifest groups.
    model, forward, w = sequential_model(tmp_path, shard_bytes=30, groups=2)
    doc = json.loads((model / "model.json").read_text())
    assert len(doc["weightsManifest"]) == 2
    assert len(list(model.glob("group1-shard*.bin"))) == -(-sum(a.nbytes for a in w.values()) // 30)
    assert w["dense_1/kernel"].nbytes > 30  # really spans two files
    x = randn(5, 4)
    assert_close(tfjs.predict(model, x, backend=backend).output, forward(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_uint8_quantized_weight(tfjs, tmp_path, backend):
    w = {"dense_1/kernel": randn(4, 5), "dense_1/bias": randn(5),
         "dense_2/kernel": randn(5, 3), "dense_2/bias": randn(3)}
    k = w["dense_1/kernel"].astype(np.float64)
    lo, hi = float(k.min()), float(k.max())
    scale = (hi - lo) / 255.0
    q = np.round((k - lo) / scale).astype(np.uint8)
    dequant = (q.astype(np.float64) * scale + lo).astype(np.float32)  # tfjs: q*scale+min
    entries = [{"name": "dense_1/kernel", "shape": k.shape, "bytes": q.tobytes(),
                "quantization": {"dtype": "uint8", "min": lo, "scale": scale,
                                 "original_dtype": "float32"}}]
    entries += [{"name": n, "array": w[n]} for n in ("dense_1/bias", "dense_2/kernel", "dense_2/bias")]
    config = {"class_name": "Sequential", "config": {"name": "q", "layers": [
        input_layer("input_1", [4]), dense("dense_1", 5, "relu"), dense("dense_2", 3)]}}
    write_model(tmp_path, config, entries)
    x = randn(6, 4)
    want = relu(x @ dequant + w["dense_1/bias"]) @ w["dense_2/kernel"] + w["dense_2/bias"]
    assert_close(tfjs.predict(tmp_path, x, backend=backend).output, want)
    # and the quantization really changed the values compared with float32 weights
    unquantized = relu(x @ w["dense_1/kernel"] + w["dense_1/bias"]) @ w["dense_2/kernel"] + w["dense_2/bias"]
    assert not np.allclose(want, unquantized, rtol=1e-6, atol=0)


def test_rewritten_model_is_reloaded(tfjs, tmp_path):
    model, forward1, _ = sequential_model(tmp_path)
    x = randn(2, 4)
    assert_close(tfjs.predict(model, x).output, forward1(x))
    _, forward2, _ = sequential_model(tmp_path)  # same path, new random weights
    assert_close(tfjs.predict(model, x).output, forward2(x))
    assert not np.allclose(forward1(x), forward2(x))


# ---------------------------------------------------------------------------------------
# Errors: tfjs's message comes back, nothing hangs, the runner keeps serving


def test_missing_shard_names_the_file(tfjs, tmp_path):
    model, _, _ = sequential_model(tmp_path, shard_bytes=60)  # 172 bytes -> 3 shards
    (model / "group1-shard2of3.bin").unlink()
    with pytest.raises(TfjsError, match="group1-shard2of3.bin") as err:
        tfjs.predict(model, randn(1, 4))
    assert "ENOENT" in err.value.message


def test_missing_weights_manifest_is_an_error(tfjs, tmp_path):
    # Plain tfjs would load this and predict with random initializer weights.
    model, _, _ = sequential_model(tmp_path, manifest=False)
    with pytest.raises(TfjsError, match="weightsManifest"):
        tfjs.predict(model, randn(1, 4))


def _stuck_topology(kind: str) -> dict:
    if kind == "unknown_layer":
        layers = [input_layer("in", [4], functional=True), dense("d", 2, inbound=["nope"])]
    elif kind == "node_never_created":
        layers = [input_layer("in", [4], functional=True), dense("d", 2, inbound=["in"])]
        layers[1]["inbound_nodes"] = [[["in", 3, 0, {}]]]
    else:  # cycle: a <- b <- a
        layers = [input_layer("in", [4], functional=True), dense("a", 4, inbound=["b"]),
                  dense("b", 4, inbound=["a"])]
    return functional(layers, ["in"], [layers[-1]["name"]])


@pytest.mark.parametrize("kind,needle", [("unknown_layer", "unknown layer 'nope'"),
                                         ("node_never_created", "node 3 of 'in'"),
                                         ("cycle", "never be resolved")])
def test_unresolvable_inbound_nodes_error_instead_of_hang(tfjs, tmp_path, kind, needle):
    write_model(tmp_path, _stuck_topology(kind), [])
    t0 = time.monotonic()
    with pytest.raises(TfjsError, match="hang") as err:
        tfjs.predict(tmp_path, randn(1, 4), timeout=30)
    assert not isinstance(err.value, TfjsTimeoutError)
    assert needle in err.value.message
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_layer_and_nested_model_pass_the_guard(tfjs, tmp_path, backend):
    # Valid graphs the hang guard must accept: a layer called twice (node index 1) and a
    # Functional model used as a layer (its first call is node 1: node 0 is its own).
    w = {"shared/kernel": randn(4, 4), "shared/bias": randn(4),
         "inner_d/kernel": randn(4, 3), "inner_d/bias": randn(3)}
    shared = dense("shared", 4, "tanh", inbound=["in"])
    shared["inbound_nodes"].append([["shared", 0, 0, {}]])
    inner = functional([input_layer("inner_in", [4], functional=True),
                        dense("inner_d", 3, inbound=["inner_in"])], ["inner_in"], ["inner_d"])
    inner.update(name="inner", inbound_nodes=[[["shared", 1, 0, {}]]])
    inner["config"]["name"] = "inner"
    outer = functional([input_layer("in", [4], functional=True), shared, inner], ["in"], ["inner"])
    outer["config"]["output_layers"] = [["inner", 1, 0]]
    write_model(tmp_path, outer, [{"name": k, "array": v} for k, v in w.items()])
    x = randn(3, 4)
    h = np.tanh(np.tanh(x @ w["shared/kernel"] + w["shared/bias"]) @ w["shared/kernel"] + w["shared/bias"])
    assert_close(tfjs.predict(tmp_path, x, backend=backend).output, h @ w["inner_d/kernel"] + w["inner_d/bias"])


def test_unknown_layer_class_reports_tfjs_message(tfjs, tmp_path):
    layers = [input_layer("in", [4], functional=True),
              {"class_name": "MultiHeadAttention", "name": "mha", "inbound_nodes": [[["in", 0, 0, {}]]],
               "config": {"name": "mha", "num_heads": 2, "key_dim": 2}}]
    write_model(tmp_path, functional(layers, ["in"], ["mha"]), [])
    with pytest.raises(TfjsError, match=r"^Unknown layer: MultiHeadAttention\. This may be due to"):
        tfjs.predict(tmp_path, randn(1, 4))


def test_flat_input_layers_get_a_message(tfjs, tmp_path):
    # tfjs itself throws an AssertionError with an EMPTY message here.
    cfg = functional([input_layer("in", [4], functional=True), dense("d", 2, inbound=["in"])],
                     ["in"], ["d"])
    cfg["config"]["input_layers"] = ["in", 0, 0]
    write_model(tmp_path, cfg, [{"name": "d/kernel", "array": randn(4, 2)},
                                {"name": "d/bias", "array": randn(2)}])
    with pytest.raises(TfjsError, match="flat form"):
        tfjs.predict(tmp_path, randn(1, 4))


def test_weight_errors_come_back_verbatim(tfjs, tmp_path):
    model, _, _ = sequential_model(tmp_path)
    doc = json.loads((model / "model.json").read_text())
    doc["weightsManifest"][0]["weights"][0]["name"] = "dense_9/kernel"
    (model / "model.json").write_text(json.dumps(doc))
    with pytest.raises(TfjsError, match="^Provided weight data has no target variable: dense_9/kernel$"):
        tfjs.predict(model, randn(1, 4))


def test_wrong_input_count_is_an_error(tfjs, tmp_path):
    model, _ = functional_model(tmp_path)
    with pytest.raises(TfjsError, match=r"2 input\(s\)"):
        tfjs.predict(model, [randn(1, 4)])


def test_runner_survives_errors_and_serves_next_request(tfjs, tmp_path):
    pid = tfjs.pid
    write_model(tmp_path / "bad", _stuck_topology("unknown_layer"), [])
    for _ in range(3):
        with pytest.raises(TfjsError):
            tfjs.predict(tmp_path / "bad", randn(1, 4))
        with pytest.raises(TfjsError):
            tfjs.predict(tmp_path / "absent", randn(1, 4))
    model, forward, _ = sequential_model(tmp_path / "good")
    x = randn(2, 4)
    for backend in BACKENDS:
        assert_close(tfjs.predict(model, x, backend=backend).output, forward(x))
    assert tfjs.pid == pid  # same process all along


def test_requests_leave_no_tensors_behind(tfjs, tmp_path):
    model, _, _ = sequential_model(tmp_path / "good")
    write_model(tmp_path / "bad", _stuck_topology("cycle"), [])
    bad_weights, _, _ = sequential_model(tmp_path / "bad_weights")
    (bad_weights / "group1-shard1of1.bin").write_bytes(b"\0" * 8)  # too short
    for backend in BACKENDS:
        tfjs.predict(model, randn(1, 4), backend=backend)
        before = tfjs.request({"cmd": "memory"})["num_tensors"]
        for _ in range(3):
            tfjs.predict(model, randn(2, 4), backend=backend, repeat=2)
            tfjs.summary(model)
            with pytest.raises(TfjsError):
                tfjs.predict(tmp_path / "bad", randn(1, 4), backend=backend)
            with pytest.raises(TfjsError, match="should have"):
                tfjs.predict(bad_weights, randn(1, 4), backend=backend)
        tfjs.predict(model, randn(1, 4), backend=backend)
        assert tfjs.request({"cmd": "memory"})["num_tensors"] == before


def test_timeout_kills_and_restarts(tmp_path):
    model, forward, _ = sequential_model(tmp_path)
    x = randn(2, 4)
    with TfjsRunner() as runner:
        first = runner.pid
        with pytest.raises(TfjsTimeoutError, match="within"):
            # no round trip through Node plus a model load fits in 0.1 ms
            runner.predict(model, x, timeout=1e-4)
        assert runner.pid is None  # killed
        assert_close(runner.predict(model, x).output, forward(x))  # restarted on demand
        assert runner.pid not in (None, first)


def test_node_missing_is_a_conversion_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ConversionError) as err:
        TfjsRunner()
    assert err.value.code == "NODE_NOT_FOUND" and "Node.js 18" in err.value.hint


def test_old_node_is_a_conversion_error(tmp_path):
    fake = tmp_path / "node"
    fake.write_text("#!/bin/sh\necho v16.20.2\n")
    fake.chmod(0o755)
    with pytest.raises(ConversionError) as err:
        TfjsRunner(node=str(fake))
    assert err.value.code == "NODE_TOO_OLD" and "v16.20.2" in err.value.message


def test_node_modules_missing_is_a_conversion_error(monkeypatch, tmp_path):
    import writer.resources as resources

    monkeypatch.setattr(resources, "_CHECKOUT", tmp_path)  # a checkout without `npm ci`
    with pytest.raises(ConversionError) as err:
        TfjsRunner(tfjs="npm")
    assert err.value.code == "TFJS_NOT_INSTALLED"
    assert "@tensorflow/tfjs" in err.value.message and "npm ci" in err.value.hint


# ---------------------------------------------------------------------------------------
# Summary


def test_summary_layers_shapes_and_metadata(tfjs, tmp_path):
    meta = {"snake_case_key": "kept_as_is", "nested": {"a": [1, 2.5, None, True]}}
    model, _, w = sequential_model(tmp_path, metadata=meta)
    s = tfjs.summary(model)
    assert s["metadata"] == meta and s["userDefinedMetadata"] == meta
    # tfjs lists the InputLayer of a Sequential model among its layers
    assert [(l["name"], l["class"]) for l in s["layers"]] == [
        ("input_1", "InputLayer"), ("dense_1", "Dense"), ("dense_2", "Dense")]
    assert [l["output_shape"] for l in s["layers"]] == [[None, 4], [None, 5], [None, 3]]
    assert [l["params"] for l in s["layers"]] == [
        0,
        w["dense_1/kernel"].size + w["dense_1/bias"].size,
        w["dense_2/kernel"].size + w["dense_2/bias"].size]
    assert s["params"] == sum(a.size for a in w.values())
    assert [i["shape"] for i in s["inputs"]] == [[None, 4]]
    assert [o["shape"] for o in s["outputs"]] == [[None, 3]]
    assert {x["name"]: x["shape"] for x in s["weights"]} == {k: list(v.shape) for k, v in w.items()}


def test_summary_functional_and_no_metadata(tfjs, tmp_path):
    model, _ = functional_model(tmp_path)
    s = tfjs.summary(model)
    assert s["metadata"] is None
    assert s["class"] == "Functional"
    assert [i["shape"] for i in s["inputs"]] == [[None, 4], [None, 4]]
    assert [o["shape"] for o in s["outputs"]] == [[None, 2], [None, 4]]
    assert {l["class"] for l in s["layers"]} == {"InputLayer", "Dense", "Add", "Concatenate"}


# ---------------------------------------------------------------------------------------
# The official tensorflowjs package (tf-keras) loads the same hand-written files


def test_official_tensorflowjs_loads_and_predicts(tmp_path):
    if os.environ.get("FLAX2TFJS_SKIP_OFFICIAL") == "1":
        pytest.skip("FLAX2TFJS_SKIP_OFFICIAL=1")
    if not OFFICIAL_PY.exists():
        pytest.fail(f"{OFFICIAL_PY} not found: run scripts/setup_tfjs_venv.sh "
                    "(or set FLAX2TFJS_SKIP_OFFICIAL=1 to skip this check)")
    seq, seq_fwd, _ = sequential_model(tmp_path / "seq")
    func, func_fwd = functional_model(tmp_path / "func")
    cnn, cnn_fwd = conv_model(tmp_path / "cnn")
    sharded, sharded_fwd, _ = sequential_model(tmp_path / "sharded", shard_bytes=30)
    x, a, b, img = randn(5, 4), randn(5, 4), randn(5, 4), randn(2, 5, 5, 2)
    for name, arr in {"x": x, "a": a, "b": b, "img": img}.items():
        np.save(tmp_path / f"{name}.npy", arr)
    jobs = [
        {"model": str(seq), "inputs": [str(tmp_path / "x.npy")], "outputs": [str(tmp_path / "seq_y.npy")]},
        {"model": str(func / "model.json"), "inputs": [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")],
         "outputs": [str(tmp_path / "func_y0.npy"), str(tmp_path / "func_y1.npy")]},
        {"model": str(cnn), "input": str(tmp_path / "img.npy"), "output": str(tmp_path / "cnn_y.npy")},
        {"model": str(sharded), "inputs": [str(tmp_path / "x.npy")], "outputs": [str(tmp_path / "sh_y.npy")]},
    ]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([str(OFFICIAL_PY), str(OFFICIAL_SCRIPT), "--jobs", str(tmp_path / "jobs.json")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    assert proc.returncode == 0 and len(lines) == 4 and all(l["ok"] for l in lines), \
        proc.stdout + proc.stderr[-3000:]
    assert_close(np.load(tmp_path / "seq_y.npy"), seq_fwd(x))
    for i, want in enumerate(func_fwd(a, b)):
        assert_close(np.load(tmp_path / f"func_y{i}.npy"), want)
    assert_close(np.load(tmp_path / "cnn_y.npy"), cnn_fwd(img))
    assert_close(np.load(tmp_path / "sh_y.npy"), sharded_fwd(x))


def test_official_script_argument_forms(tmp_path):
    """MODEL_DIR IN OUT [IN OUT ...] and --jobs FILE parse into the same job list (no TF import)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("load_and_predict", OFFICIAL_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pairs = mod._jobs_from_argv(["m", "x0.npy", "y0.npy", "x1.npy", "y1.npy"])
    assert pairs == [{"model": "m", "inputs": ["x0.npy"], "outputs": ["y0.npy"]},
                     {"model": "m", "inputs": ["x1.npy"], "outputs": ["y1.npy"]}]
    (tmp_path / "jobs.json").write_text(json.dumps(pairs))
    assert mod._jobs_from_argv(["--jobs", str(tmp_path / "jobs.json")]) == pairs
    with pytest.raises(SystemExit):
        mod._jobs_from_argv(["m", "x0.npy"])  # an input without its output path
