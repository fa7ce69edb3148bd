"""The conversion studio (``python -m writer studio``): engine events, server rules, and the page in
real Chromium against the real server.

The browser part runs ``tests/web/check_studio.mjs`` once for the module (playwright-core driving
Debian's Chromium) and the tests judge what it observed. Expected predictions come from running the
checkpoint in Flax. Screenshots land in ``test-artifacts/studio/``; ``UPDATE_DOCS_SCREENSHOT=1``
also copies them to ``docs/img/studio-*.png`` (shown in docs/studio.md).
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_close
from tests.test_web_demo import _write_gray_png
from writer.convert import ConvertOptions, convert
from topology.vocabulary.errors import ConversionError

MNIST = ROOT / "examples" / "mnist_ckpt"
ARTIFACTS = ROOT / "test-artifacts" / "studio"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
PAYLOAD = "<img src=x onerror=\"document.title='owned'\">"
BIG_LAYERS, BIG_UNITS = 48, 1024
MLP_SOURCE = ("import flax.linen as nn\n\n\nclass Helper:\n    pass\n\n\nclass MLP(nn.Module):\n    @nn.compact\n"
              "    def __call__(self, x):\n        hidden = nn.relu(nn.Dense(4)(x))\n        return nn.Dense(3)(hidden)\n")  # 48 x 4 MiB: long enough for a click to cancel it mid-way


# ---------- fixtures: a studio folder with good, bad and big checkpoints ----------

def _big_npz(path: Path) -> None:
    arrays = {}
    for i in range(BIG_LAYERS):
        arrays[f"params/Dense_{i}/kernel"] = np.full((BIG_UNITS, BIG_UNITS), 0.001, np.float32)
        arrays[f"params/Dense_{i}/bias"] = np.zeros(BIG_UNITS, np.float32)
    np.savez(path, **arrays)


def _mlp_npz(path: Path, nan: bool = False) -> None:
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((8, 4)).astype(np.float32)
    if nan:
        kernel[2, 1] = np.nan
    np.savez(path, **{"params/Dense_0/kernel": kernel, "params/Dense_0/bias": np.zeros(4, np.float32),
                      "params/Dense_1/kernel": rng.standard_normal((4, 3)).astype(np.float32),
                      "params/Dense_1/bias": np.zeros(3, np.float32)})


@pytest.fixture(scope="module")
def studio_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("studio")
    root = base / "root"
    (root / "ckpts").mkdir(parents=True)
    shutil.copytree(MNIST, root / "ckpts" / "mnist_ckpt")
    (root / "broken.msgpack").write_bytes(b"\x82\xa6params\x81\xa5Dense\x81\xa6kernel\xc7\x10")  # cut short
    _mlp_npz(root / "nan.npz", nan=True)
    _mlp_npz(root / "small.npz")
    _big_npz(root / "big.npz")
    (base / "secret").mkdir()
    (base / "secret" / "params.npz").write_bytes((root / "small.npz").read_bytes())
    (root / "escape").symlink_to(base / "secret")  # a link out of ROOT
    _mlp_npz(base / "upload.npz")  # outside ROOT: reaches the studio only by upload
    (root / "ckpts" / "mlp_model.py").write_text(MLP_SOURCE)
    return root


@pytest.fixture(scope="module")
def server(studio_root):
    from writer.commands.studio import make_server

    srv = make_server(studio_root, 0, max_upload_bytes=1 << 20)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.close()


def _request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), data


def _post(server, path: str, form: dict, headers: dict | None = None):
    status, _, data = _request(server, "POST", path, json.dumps(form).encode(),
                               {"Content-Type": "application/json", "X-Studio-Token": server.token, **(headers or {})})
    return status, json.loads(data)


# ---------- the engine's events (shared by the CLI bar and the studio) ----------

def test_convert_emits_stages_notices_and_tensors_in_order(tmp_path):
    events = []
    report = convert(MNIST, tmp_path / "out", ConvertOptions(quantize="uint8"), events=events.append)
    stages = [e["stage"] for e in events if e["type"] == "stage"]
    assert stages == ["read", "fix", "graph", "optimize", "write"]
    tensors = [e for e in events if e["type"] == "tensor"]
    assert [e["index"] for e in tensors] == list(range(1, 9)) and {e["count"] for e in tensors} == {8}
    assert tensors[-1]["bytes"] == tensors[-1]["total_bytes"] == (tmp_path / "out" / "group1-shard1of1.bin").stat().st_size
    assert all(a["bytes"] < b["bytes"] for a, b in zip(tensors, tensors[1:]))
    notices = [(e["kind"], e["code"]) for e in events if e["type"] == "notice"]
    assert notices == [(n.kind, n.code) for n in report.notices] and notices
    assert events.index(tensors[0]) > max(i for i, e in enumerate(events) if e["type"] == "stage")


def test_raising_from_the_listener_cancels_and_leaves_nothing(tmp_path):
    class Stop(BaseException):
        pass

    def listener(event):
        if event["type"] == "tensor" and event["index"] == 3:
            raise Stop()

    with pytest.raises(Stop):
        convert(MNIST, tmp_path / "out", ConvertOptions(), events=listener)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a staging folder


# ---------- --preset ----------

def _manifest(folder: Path) -> tuple[set, list]:
    doc = json.loads((folder / "model.json").read_text())
    group = doc["weightsManifest"][0]
    return {w.get("quantization", {}).get("dtype") for w in group["weights"]}, group["paths"]


@pytest.mark.parametrize("argv,dtype,shards", [
    (["--preset", "web"], "float16", 1),
    (["--preset", "mobile"], "uint8", 1),
    (["--preset", "mobile", "--quantize", "float16", "--weight-shard-size-bytes", "1048576"], "float16", 2),
])
def test_cli_preset(tmp_path, argv, dtype, shards):
    from writer.cli import main

    assert main([str(MNIST), str(tmp_path / "out"), "--quiet", *argv]) == 0
    dtypes, paths = _manifest(tmp_path / "out")
    assert dtypes == {dtype} and len(paths) == shards


# ---------- server rules ----------

def test_paths_outside_root_are_refused(server, studio_root):
    for folder in ["..", "../", "/etc", "escape", "ckpts/../../", "~"]:
        status, _, data = _request(server, "GET", f"/api/list?dir={folder}")
        assert status == 403 and json.loads(data)["error"]["code"] == "PATH_OUTSIDE_ROOT", folder
    for form in [{"checkpoint": "escape/params.npz"}, {"checkpoint": "../secret/params.npz"},
                 {"checkpoint": str(studio_root / "small.npz")},  # absolute, even inside
                 {"checkpoint": "small.npz", "module": "../model.py:M"}]:
        status, body = _post(server, "/api/inspect", form)
        assert status == 403 and body["error"]["code"] == "PATH_OUTSIDE_ROOT", form
    status, body = _post(server, "/api/convert", {"checkpoint": "small.npz", "out": "../outside_out"})
    assert status == 403 and body["error"]["code"] == "PATH_OUTSIDE_ROOT"
    assert not (studio_root.parent / "outside_out").exists()
    # The symlink out of ROOT is not even listed.
    status, _, data = _request(server, "GET", "/api/list?dir=.")
    assert [e["name"] for e in json.loads(data)["entries"]] == ["big.npz", "broken.msgpack", "ckpts", "nan.npz", "small.npz"]


def test_host_and_origin_are_checked(server):
    port = server.server_address[1]
    for host in ["evil.example", f"evil.example:{port}", "127.0.0.1:1", "localhost.evil.example"]:
        status, _, data = _request(server, "GET", "/", headers={"Host": host})
        assert status == 403 and b"HOST_REFUSED" in data, host
    assert _request(server, "GET", "/", headers={"Host": f"localhost:{port}"})[0] == 200
    status, body = _post(server, "/api/inspect", {"checkpoint": "small.npz"}, {"Origin": "http://evil.example"})
    assert status == 403 and body["error"]["code"] == "HOST_REFUSED"


def test_headers_and_no_directory_listing(server):
    status, headers, body = _request(server, "GET", "/")
    assert status == 200 and b"flax2tfjs studio" in body
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in headers["Content-Security-Policy"] and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    for path in ["/vendor/", "/vendor", "/api/", "/../web_demo/index.html", "/index.html", "/%2e%2e/writer/cli.py",
                 "/vendor/..%2f..%2fwriter%2fcli.py", "/api/jobs/0123456789abcdef/model/model.json"]:
        status, headers, _ = _request(server, "GET", path)
        assert status == 404, path
        assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = _request(server, "GET", "/troubleshooting")
    assert status == 200 and b'id="path_outside_root"' in body


def test_event_stream_replays_and_resumes(server, studio_root):
    status, job = _post(server, "/api/convert", {"checkpoint": "small.npz", "out": "sse_out"})
    assert status == 200
    server.jobs.get(job["job"]).wait(60)
    status, headers, data = _request(server, "GET", f"/api/jobs/{job['job']}/events")
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    events = [json.loads(line[6:]) for line in data.decode().splitlines() if line.startswith("data: ")]
    assert [e["seq"] for e in events] == list(range(len(events))) and events[-1]["type"] == "done"
    _, _, rest = _request(server, "GET", f"/api/jobs/{job['job']}/events", headers={"Last-Event-ID": "3"})
    resumed = [json.loads(line[6:]) for line in rest.decode().splitlines() if line.startswith("data: ")]
    assert resumed == events[4:]
    shutil.rmtree(studio_root / "sse_out")


def test_convert_options_reach_the_engine(server, studio_root):
    """Weights, shard size, metadata and (where the engine has it) optimisation, as the page sends them."""
    from writer.presets import engine_fields

    rng = np.random.default_rng(1)  # 64x96 + 96 uint8 weights: two 4 KiB shards
    np.savez(studio_root / "wide.npz", **{"params/Dense_0/kernel": rng.standard_normal((64, 96)).astype(np.float32),
                                          "params/Dense_0/bias": np.zeros(96, np.float32)})
    form = {"checkpoint": "wide.npz", "out": "opts_out", "quantize": "uint8", "shard_bytes": 4096,
            "metadata": {"labels": ["a", "b", "c"]}, "optimize": True}
    status, job = _post(server, "/api/convert", form)
    assert status == 200
    server.jobs.get(job["job"]).wait(60)
    assert server.jobs.get(job["job"]).state == "done", server.jobs.get(job["job"]).events[-1]
    doc = json.loads((studio_root / "opts_out" / "model.json").read_text())
    assert {w["quantization"]["dtype"] for w in doc["weightsManifest"][0]["weights"]} == {"uint8"}
    assert len(doc["weightsManifest"][0]["paths"]) == 2  # 6,240 bytes of uint8 weights in 4 KiB shards
    assert doc["userDefinedMetadata"]["labels"] == ["a", "b", "c"]
    if "optimize" in engine_fields():
        assert doc["userDefinedMetadata"]["flax2tfjs"]["optimize"]["enabled"] is True
    for bad, code in [({"metadata": {"flax2tfjs": 1}}, "BAD_METADATA"), ({"metadata": [1]}, "BAD_METADATA"),
                      ({"quantize": "int4"}, "BAD_OPTION"), ({"shard_bytes": "big"}, "BAD_OPTION"),
                      ({"shard_bytes": 1}, "BAD_OPTION"), ({"shard_bytes": 4095}, "BAD_OPTION"),
                      ({"input_shape": "0,2"}, "BAD_OPTION")]:
        status, body = _post(server, "/api/convert", {**form, "out": "opts_bad", **bad})
        assert status == 400 and body["error"]["code"] == code, bad
    assert not (studio_root / "opts_bad").exists()
    shutil.rmtree(studio_root / "opts_out")
    (studio_root / "wide.npz").unlink()


def test_uploads_are_capped_and_checked(server):
    token = {"X-Studio-Token": server.token}
    status, _, data = _request(server, "POST", "/api/upload?name=x.msgpack", b"",
                               {"Content-Length": str(2 << 20), **token})  # announced, never sent: refused first
    assert status == 413 and json.loads(data)["error"]["code"] == "UPLOAD_TOO_LARGE"
    status, _, data = _request(server, "POST", "/api/upload?name=evil.sh", b"#!/bin/sh", token)
    assert status == 400 and json.loads(data)["error"]["code"] == "UPLOAD_REFUSED"
    status, _, data = _request(server, "POST", "/api/upload?name=../../x.npz", b"PK\x03\x04", token)
    handle = json.loads(data)["checkpoint"]
    assert status == 200 and handle.startswith("upload:") and handle.endswith("/x.npz")  # no path kept
    assert Path(server.uploads.folder) in server.uploads.resolve(handle).parents


def test_one_conversion_per_output_folder(server, studio_root):
    status, first = _post(server, "/api/convert", {"checkpoint": "big.npz", "out": "busy_out", "quantize": "uint8"})
    assert status == 200
    status, second = _post(server, "/api/convert", {"checkpoint": "small.npz", "out": "busy_out"})
    assert status == 409 and second["error"]["code"] == "OUTPUT_BUSY"
    _post(server, f"/api/jobs/{first['job']}/cancel", {})
    server.jobs.get(first["job"]).wait(60)
    assert server.jobs.get(first["job"]).state in ("cancelled", "done")
    shutil.rmtree(studio_root / "busy_out", ignore_errors=True)


def test_inspect_with_model_code_from_root(server, studio_root):
    (studio_root / "mlp.py").write_text(MLP_SOURCE)
    try:
        status, report = _post(server, "/api/inspect", {"checkpoint": "small.npz", "module": "mlp.py:MLP",
                                                        "input_shape": "8"})
        assert status == 200 and report["graph"] and report["graph"]["topology"] == "traced", report
        layers = report["graph"]["layers"]
        assert [l["params"] for l in layers if l["params"]] == [8 * 4 + 4, 4 * 3 + 3]
        for spec in ("mlp.py", "mlp.py:", "mlp.py:not-a-name"):  # no class: the hint names the file's classes
            status, body = _post(server, "/api/inspect", {"checkpoint": "small.npz", "module": spec})
            assert status == 400 and body["error"]["code"] == "BAD_MODULE_SPEC", spec
            assert "mlp.py:MLP, mlp.py:Helper" in body["error"]["hint"], body
        status, body = _request(server, "GET", "/api/classes?file=mlp.py")[::2]
        assert status == 200 and json.loads(body)["classes"] == ["MLP", "Helper"]  # Flax modules first
    finally:
        (studio_root / "mlp.py").unlink()


def test_answers_and_events_show_paths_relative_to_root(server, studio_root):
    """No absolute server path in an error answer, an event stream or a report; hints come twice:
    as the CLI prints them and as the page names its controls."""
    (studio_root / "taken_tfjs").mkdir()
    (studio_root / "taken_tfjs" / "keep.txt").write_text("not ours")
    try:
        status, job = _post(server, "/api/convert", {"checkpoint": "small.npz", "out": "taken_tfjs"})
        assert status == 200
        server.jobs.get(job["job"]).wait(60)
        _, _, stream = _request(server, "GET", f"/api/jobs/{job['job']}/events")
        error = [json.loads(line[6:]) for line in stream.decode().splitlines() if line.startswith("data: ")][-1]
        assert error["code"] == "OUTPUT_NOT_EMPTY" and str(studio_root) in server.jobs.get(job["job"]).events[-1]["message"]
        assert str(studio_root) not in stream.decode() and "taken_tfjs" in error["message"]
        assert "--force" in error["hint"] and "--force" not in error["page_hint"] and error["controls"] == ["force"]
        status, done = _post(server, "/api/convert", {"checkpoint": "small.npz", "out": "fresh_tfjs"})
        server.jobs.get(done["job"]).wait(60)
        _, _, stream = _request(server, "GET", f"/api/jobs/{done['job']}/events")
        assert b'"type": "done"' in stream and str(studio_root).encode() not in stream
        status, report = _post(server, "/api/inspect", {"checkpoint": "small.npz"})
        assert status == 200 and str(studio_root) not in json.dumps(report)
        assert report["suggested_out"] == "small_tfjs"
        status, _, body = _request(server, "GET", "/api/suggest?checkpoint=fresh")
        assert json.loads(body)["suggested_out"] == "fresh_tfjs_2"  # fresh_tfjs exists now
    finally:
        shutil.rmtree(studio_root / "taken_tfjs")
        shutil.rmtree(studio_root / "fresh_tfjs", ignore_errors=True)


def test_the_assumption_controls_reach_the_engine(server):
    """Activation, pooling and step from the page's "Model code and input" controls."""
    status, config = _request(server, "GET", "/api/config")[::2]
    config = json.loads(config)
    assert "max" in config["pools"] and "tanh" in config["activations"] and config["pool"] == "avg"
    status, report = _post(server, "/api/inspect", {"checkpoint": "ckpts/mnist_ckpt", "pool": "max"})
    assert status == 200 and "MaxPooling2D" in [l["class_name"] for l in report["graph"]["layers"]]
    assert any("max" in n["message"] for n in report["notices"] if n["code"] == "POOLING")
    for bad in ({"pool": "sum"}, {"activation": "bogus"}, {"step": "latest"}, {"step": -1}):
        status, body = _post(server, "/api/inspect", {"checkpoint": "ckpts/mnist_ckpt", **bad})
        assert status == 400 and body["error"]["code"] == "BAD_OPTION", bad


def test_studio_command_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "writer", "studio", str(tmp_path / "nope"), "--port", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error[STUDIO_ROOT_NOT_FOUND]")
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr


# ---------- the page in Chromium ----------

@pytest.fixture(scope="module")
def flax_logits():
    import jax
    import orbax.checkpoint as ocp

    from examples.train_mnist import mnist_cnn_apply

    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(MNIST)["params"]
    params = jax.tree_util.tree_map(np.asarray, params)
    return lambda x: np.asarray(mnist_cnn_apply(params, np.asarray(x, np.float32)))


@pytest.fixture(scope="module")
def digit():
    from examples.mnist_data import load_mnist

    _, _, x_test, y_test = load_mnist()
    return x_test[0], int(y_test[0])


@pytest.fixture(scope="module")
def page(server, studio_root, digit):
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `bash scripts/setup.sh --dev`, or set CHROMIUM_PATH")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    config = {
        "url": f"http://127.0.0.1:{server.server_address[1]}/",
        "artifacts": str(ARTIFACTS),
        "outside": ["../secret/params.npz", "escape/params.npz", "/etc/passwd"],
        "mnist": "ckpts/mnist_ckpt", "mnistOut": "ckpts/mnist_tfjs",
        "broken": "broken.msgpack", "nonfinite": "nan.npz", "nonfiniteOut": "nan_tfjs",
        "big": "big.npz", "bigOut": "big_tfjs", "bigShotOut": "shots/big_tfjs",
        "upload": str(studio_root.parent / "upload.npz"),
        "digit": digit[0].tolist(), "payload": PAYLOAD, "image": str(ARTIFACTS / "digit.png"),
        "moduleFile": "ckpts/mlp_model.py",
    }
    _write_gray_png(ARTIFACTS / "digit.png", 255 - np.rint(digit[0][:, :, 0] * 255))  # dark on white: the page inverts
    config_file, results_file = ARTIFACTS / "config.json", ARTIFACTS / "results.json"
    config_file.write_text(json.dumps(config))
    proc = subprocess.run(["node", str(ROOT / "tests" / "web" / "check_studio.mjs"), str(config_file), str(results_file)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"browser script failed:\n{proc.stdout}\n{proc.stderr}"
    results = json.loads(results_file.read_text())
    assert "fatal" not in results, results["fatal"]
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        for name, path in results["screenshots"].items():
            shutil.copy(path, ROOT / "docs" / "img" / f"studio-{name}.png")
    return results


def test_page_lists_root_and_refuses_paths_outside(page):
    assert "ckpts" in page["listing"] and "escape" not in page["listing"]
    for path, box in page["outside"].items():
        assert box["shown"] and box["code"] == "PATH_OUTSIDE_ROOT", path
        assert "hint:" in box["text"] and box["link"] == "/troubleshooting#path_outside_root"
    for answer in page["outsideApi"]:
        assert answer["status"] == 403 and answer["body"]["error"]["code"] == "PATH_OUTSIDE_ROOT"


def test_page_inspects_mnist(page):
    inspect = page["inspect"]
    assert inspect["state"] == "inspected", inspect["error"]
    assert [row[2] for row in inspect["layers"]] == ["Conv2D", "AveragePooling2D", "Conv2D", "AveragePooling2D",
                                                    "Flatten", "Dense", "Dense"]
    dense = next(r for r in inspect["layers"] if r[1] == "Dense_0")
    assert dense[4] == f"{3136 * 256 + 256:,}" and dense[3] == "(256)"
    assert "824,458 parameters" in inspect["summary"]
    assert any("Dense_0/kernel" not in leaf and "(3136, 256) float32" in leaf for leaf in inspect["treeLeaves"])
    assert inspect["treeRootOpenAfterClick"] is False
    assert "3.1 MiB as float32" in inspect["size"]  # the CLI's rule (writer.term.human_bytes)
    assert inspect["suggestedOut"] == "ckpts/mnist_ckpt_tfjs"


def test_page_presets(page):
    from writer.presets import engine_fields

    assert page["preset"]["mobile"]["quantize"] == "uint8" and page["preset"]["mobile"]["shardMiB"] == "1"
    if "optimize" in engine_fields():
        assert page["preset"]["mobile"]["optimize"] is True
    assert "→ 805.1 KiB as uint8" in page["preset"]["mobile"]["size"]
    assert page["preset"]["web"]["quantize"] == "float16" and page["preset"]["web"]["shardMiB"] == "4"
    assert "→ 1.6 MiB as float16" in page["preset"]["web"]["size"]


def test_page_converts_with_live_events_in_order(page, studio_root):
    conv = page["convert"]
    assert conv["state"] == "converted", conv
    events = conv["events"]
    assert [e["seq"] for e in events] == list(range(len(events)))  # every event, once, in order
    assert [e["stage"] for e in events if e["type"] == "stage"] == ["read", "fix", "graph", "optimize", "write"]
    tensors = [e for e in events if e["type"] == "tensor"]
    assert [e["index"] for e in tensors] == list(range(1, 9))
    assert events[-1]["type"] == "done"
    out = studio_root / "ckpts" / "mnist_tfjs"
    assert tensors[-1]["bytes"] == (out / "group1-shard1of1.bin").stat().st_size
    assert conv["stages"][:5] == [[s, "done"] for s in ("read", "fix", "graph", "optimize", "write")]
    assert [n.split("[")[0] for n in conv["notices"]] == ["assumption"] * 5
    text = " ".join(conv["notices"])  # the overrides are named by the page's controls, not CLI flags
    assert "--" not in text and "“Activation” under “Model code and input”" in text and "“Pooling”" in text, text
    assert conv["listed"], "the file list shows the new folder after the conversion"
    assert conv["nextOut"] == "ckpts/mnist_ckpt_tfjs"  # the next default does not collide
    assert "8/8" not in conv["progress"] and "824,458 parameters" in conv["progress"]
    meta = json.loads((out / "model.json").read_text())["userDefinedMetadata"]
    assert meta["labels"] == ["zero", "one"] and meta["note"] == PAYLOAD
    assert "tf.loadLayersModel('/mnist_tfjs/model.json')" in conv["snippet"]
    again = page["convertAgain"]["error"]
    assert page["convertAgain"]["state"] == "error" and again["code"] == "OUTPUT_NOT_EMPTY"


def test_page_error_is_next_to_the_action_and_announced(page, studio_root):
    """Under the Convert button (not a banner far above), focused, on screen, role=alert; the hint
    names the checkbox, and "Replace it and convert again" does just that."""
    again = page["convertAgain"]["error"]
    assert again["card"] == "convert-card" and again["after"] == "convert-buttons", again
    assert again["focused"] and again["onScreen"] and again["role"] == "alert", again
    assert "tick “Replace the folder if it is not empty”" in again["text"] and "--force" not in again["text"]
    assert str(studio_root) not in again["text"] and "ckpts/mnist_tfjs" in again["text"]  # relative to ROOT
    assert "error[OUTPUT_NOT_EMPTY]" in page["convertAgain"]["progress"]
    assert again["buttons"] == ["Replace it and convert again", "Go to “Replace the folder if it is not empty”"]
    assert page["convertAgain"]["goTo"] == "force"
    assert page["replaced"]["state"] == "converted" and page["replaced"]["force"], page["replaced"]


def test_page_download_is_the_output_folder(page, server, studio_root):
    status, headers, data = _request(server, "GET", page["convert"]["download"])
    assert status == 200 and headers["Content-Type"] == "application/zip"
    out = studio_root / "ckpts" / "mnist_tfjs"
    with zipfile.ZipFile(BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == sorted(f"mnist_tfjs/{p.name}" for p in out.iterdir())
        for path in out.iterdir():
            assert archive.read(f"mnist_tfjs/{path.name}") == path.read_bytes()
    assert _request(server, "GET", page["convert"]["download"])[2] == data  # deterministic


def test_page_verify_passes(page):
    verify = page["verify"]
    assert verify["state"] == "verified", verify
    assert verify["verdict"].startswith("PASS")
    report = verify["report"]
    assert report["passed"] and report["max_abs_error"] <= 1e-4 * report["scale"]
    assert report["top1_agreement"] == 1.0
    names = [row[0] for row in verify["metrics"]]
    assert names[:4] == ["max abs error", "mean squared error", "top-1 agreement", "predict latency"]


def test_page_runs_the_model_in_the_browser(page, flax_logits, digit):
    browser = page["browser"]
    assert page["browserTabSelected"] == "true"
    assert browser["state"] == "tested", browser
    expected = flax_logits(digit[0][None])
    for backend in ("cpu", "wasm", "webgl"):
        result = browser["results"][backend]
        assert "error" not in result, result
        assert result["backend"] == backend and 0 < result["medianMs"]
        assert_close(np.asarray(result["values"], np.float32).reshape(1, 10), expected,
                     rtol=1e-4 if backend == "webgl" else 1e-5)
        assert int(np.argmax(result["values"])) == digit[1]
    assert [row[0] for row in browser["timings"]] == ["cpu", "wasm", "webgl"]
    assert [row[2] for row in browser["layers"]][1:] == ["Conv2D", "AveragePooling2D", "Conv2D", "AveragePooling2D",
                                                         "Flatten", "Dense", "Dense"]


def test_page_shows_coded_errors_with_hints(page, server, studio_root):
    broken = page["broken"]
    assert broken["shown"] and broken["code"] == "TRUNCATED_CHECKPOINT", broken
    assert "hint:" in broken["text"] and broken["link"] == "/troubleshooting#truncated_checkpoint"
    assert page["nonfiniteInspect"] == "inspected"
    bad = page["nonfinite"]
    assert bad["state"] == "error" and bad["error"]["code"] == "NONFINITE_WEIGHT"
    assert "Dense_0" in bad["error"]["text"] and "tick “Write NaN/Inf weights anyway”" in bad["error"]["text"]
    assert bad["error"]["card"] == "convert-card" and bad["error"]["focused"]
    assert page["broken"]["card"] == "pick-card" and page["broken"]["focused"]  # inspect errors: in the pick card
    assert ["write", "failed"] in bad["stages"]
    assert not (studio_root / "nan_tfjs").exists()
    _, _, doc = _request(server, "GET", "/troubleshooting")  # the links lead somewhere
    assert b'id="truncated_checkpoint"' in doc and b'id="nonfinite_weight"' in doc


def test_page_runs_an_image(page, flax_logits, digit):
    """The test tab's image input (the tester's F2T.imageTensor): the PNG of a digit, inverted back."""
    run = page["browserImage"]
    assert run["state"] == "tested", run
    assert run["preview"] == {"hidden": False, "width": 28, "height": 28}
    x = (np.rint(digit[0] * 255) / 255)[None].astype(np.float32)  # what 8-bit pixels can carry
    for backend in ("cpu", "wasm", "webgl"):
        result = run["results"][backend]
        assert "error" not in result, result
        assert_close(np.asarray(result["values"], np.float32).reshape(1, 10), flax_logits(x),
                     rtol=1e-4 if backend == "webgl" else 1e-5)
        assert int(np.argmax(result["values"])) == digit[1]


def test_page_lists_the_classes_of_a_model_file(page):
    classes = page["classes"]
    assert classes["open"] and classes["options"] == ["ckpts/mlp_model.py:MLP", "ckpts/mlp_model.py:Helper"]
    assert "Classes in ckpts/mlp_model.py: MLP, Helper" in classes["text"]
    empty = page["emptyClass"]
    assert empty["code"] == "BAD_MODULE_SPEC" and "ckpts/mlp_model.py:MLP" in empty["text"], empty
    assert empty["card"] == "pick-card" and empty["focused"] and empty["onScreen"]
    assert "null" not in empty["text"]


def test_page_assumption_controls(page):
    """Activation and Pooling list the template's choices; Pooling = max changes the inferred graph."""
    controls = page["controls"]
    assert "relu" in controls["activation"] and controls["pool"] == ["avg", "max", "none"] and controls["selected"] == "avg"
    max_pool = page["maxPool"]
    assert max_pool["state"] == "inspected" and max_pool["layers"].count("MaxPooling2D") == 2, max_pool
    assert any("max pooling" in n and "“Pooling” under “Model code and input”" in n for n in max_pool["notices"]), max_pool


def test_page_cancel_leaves_nothing(page, studio_root):
    cancel = page["cancel"]
    assert page["bigInspect"] == "inspected"
    assert cancel["state"] == "cancelled", cancel
    assert cancel["last"]["type"] == "cancelled"
    assert 1 <= cancel["tensors"] < cancel["count"] == 2 * BIG_LAYERS
    assert " tensors · " in page["progressMidway"] and "MiB/s" in page["progressMidway"]
    assert not (studio_root / "big_tfjs").exists()
    assert not [p.name for p in studio_root.iterdir() if p.name.startswith(".big_tfjs")]


def test_page_accepts_a_dropped_file(page):
    upload = page["upload"]
    assert upload["state"] == "inspected" and upload["path"].startswith("upload:")
    assert upload["layers"] == 2  # two Dense


def test_page_is_clean_and_accessible(page):
    assert page["problems"] == []  # no script error and no CSP violation
    assert page["blockedRequests"] == []
    assert page["focused"] == "convert" and page["focusOutline"] == "solid"
    assert page["contrast"]["ratio"] >= 4.5, page["contrast"]  # WCAG AA for all visible text
    assert page["noHorizontalScroll"]
    for name in ("pick", "inspect", "convert", "progress", "verify", "browser", "error", "cancel", "error-inline", "image"):
        assert Path(page["screenshots"][name]).stat().st_size > 10_000, name
