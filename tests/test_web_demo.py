"""The web demo and model tester in real Chromium, and the ``demo`` command's server.

The browser part runs ``tests/web/check_pages.mjs`` once (playwright-core driving Debian's
Chromium, offline, against a local ``http.server``) and judges what it observed here. Expected
predictions come from running the checkpoint's parameters in Flax, rounded to float16 as the
committed model stores them; digits are real held-out MNIST test digits.
Screenshots land in ``test-artifacts/web/``; ``UPDATE_DOCS_SCREENSHOT=1`` also refreshes
``docs/img/web_demo.png``.
"""
from __future__ import annotations

import functools
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import struct
import threading
import urllib.request
import zlib
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_close
from writer import to_tensorflowjs
from writer.commands.demo import make_server
from topology.vocabulary.errors import ConversionError

WEB = ROOT / "web_demo"
ARTIFACTS = ROOT / "test-artifacts" / "web"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
PAYLOAD = "<img src=x onerror=\"document.title='owned'\">"
RUNS = 20  # timed runs per backend in the tester


# ---------- expected values from Flax ----------

@pytest.fixture(scope="module")
def flax_params() -> dict:
    """The checkpoint's parameters rounded to float16 and back, as the committed model holds them."""
    import jax
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(ROOT / "examples" / "mnist_ckpt")["params"]
    return jax.tree_util.tree_map(lambda a: np.asarray(a).astype(np.float16).astype(np.float32), params)


def flax_logits(params: dict, x: np.ndarray) -> np.ndarray:
    from examples.train_mnist import mnist_cnn_apply

    return np.asarray(mnist_cnn_apply(params, x.astype(np.float32)))


@pytest.fixture(scope="module")
def mnist():
    from examples.mnist_data import load_mnist

    return load_mnist()


# ---------- a static site with broken models beside the real one ----------

def _serve(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _static_server(root: Path) -> ThreadingHTTPServer:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    return _serve(ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))))


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


def _edit_model_json(folder: Path, edit) -> None:
    doc = json.loads((folder / "model.json").read_text())
    edit(doc)
    (folder / "model.json").write_text(json.dumps(doc))


def _write_gray_png(path: Path, pixels: np.ndarray) -> None:
    """An 8-bit greyscale PNG, written by hand (no imaging library needed)."""
    h, w = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].astype(np.uint8).tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _xss_model(folder: Path) -> None:
    shutil.copytree(WEB / "model", folder)

    def edit(doc):
        meta = doc["userDefinedMetadata"]
        meta["labels"] = [f"{PAYLOAD}{d}" for d in range(10)]
        meta["note"] = PAYLOAD
        meta["flax2tfjs"]["source"]["name"] = PAYLOAD
        doc["convertedBy"] = doc["generatedBy"] = PAYLOAD
        # Layer names cannot carry markup: tfjs refuses them ("Not a valid tensor name").

    _edit_model_json(folder, edit)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """web_demo/ (symlinked, unchanged) plus fixtures/ with broken and hostile models."""
    root = tmp_path_factory.mktemp("site")
    for entry in WEB.iterdir():
        (root / entry.name).symlink_to(entry)
    fixtures = root / "fixtures"
    shard = "group1-shard1of1.bin"
    (fixtures / "missing-shard").mkdir(parents=True)
    shutil.copy(WEB / "model" / "model.json", fixtures / "missing-shard")
    shutil.copytree(WEB / "model", fixtures / "short-shard")
    data = (WEB / "model" / shard).read_bytes()
    (fixtures / "short-shard" / shard).write_bytes(data[:-100])
    (fixtures / "bad-json").mkdir()
    (fixtures / "bad-json" / "model.json").write_text((WEB / "model" / "model.json").read_text()[:-40])
    shutil.copytree(WEB / "model", fixtures / "no-manifest")
    _edit_model_json(fixtures / "no-manifest", lambda doc: doc.pop("weightsManifest"))
    (fixtures / "unknown-inbound").mkdir()
    (fixtures / "unknown-inbound" / "model.json").write_text(json.dumps({
        "format": "layers-model",
        "modelTopology": {"class_name": "Functional", "config": {
            "name": "f",
            "layers": [
                {"class_name": "InputLayer", "name": "in", "inbound_nodes": [],
                 "config": {"name": "in", "batch_input_shape": [None, 4], "dtype": "float32"}},
                {"class_name": "Dense", "name": "d", "inbound_nodes": [[["nope", 0, 0, {}]]],
                 "config": {"name": "d", "units": 2}},
            ],
            "input_layers": [["in", 0, 0]], "output_layers": [["d", 0, 0]]}},
        "weightsManifest": [],
    }))
    _xss_model(fixtures / "xss")
    return root


@pytest.fixture(scope="module")
def browser_results(site, mnist) -> dict:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `bash scripts/setup.sh --dev` "
                    "(it runs `apt-get install -y chromium`), or set CHROMIUM_PATH")
    _, _, x_test, y_test = mnist
    # The second test digit of each class (the first is a sample button): fixed, not hand-picked.
    picks = [int(np.flatnonzero(y_test == d)[1]) for d in range(10)]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Dark ink on white, as a scanned digit would be; the tester inverts it back.
    _write_gray_png(ARTIFACTS / "digit.png", 255 - np.rint(x_test[1, :, :, 0] * 255))
    static = _static_server(site)
    demo = _serve(make_server(site / "fixtures" / "xss", 0))
    config = {
        "base": _url(static),
        "xssDemo": _url(demo),
        "digits": [{"label": int(y_test[i]), "index": i, "pixels": x_test[i].ravel().tolist()} for i in picks],
        "testerInput": x_test[0].tolist(),
        "runs": RUNS,
        "fileSets": {
            "complete": [str(WEB / "model" / "model.json"), str(WEB / "model" / "group1-shard1of1.bin")],
            "missingShard": [str(WEB / "model" / "model.json")],
        },
        "folder": str(WEB / "model"),
        "image": str(ARTIFACTS / "digit.png"),
        "broken": {
            "missing_shard": "fixtures/missing-shard/model.json",
            "short_shard": "fixtures/short-shard/model.json",
            "bad_json": "fixtures/bad-json/model.json",
            "no_manifest": "fixtures/no-manifest/model.json",
            "unknown_inbound": "fixtures/unknown-inbound/model.json",
            "no_model": "fixtures/nothing-here/model.json",
        },
        "xssModel": "fixtures/xss/model.json",
        "artifacts": str(ARTIFACTS),
    }
    config_file = ARTIFACTS / "config.json"
    results_file = ARTIFACTS / "results.json"
    config_file.write_text(json.dumps(config))
    try:
        proc = subprocess.run(["node", str(ROOT / "tests" / "web" / "check_pages.mjs"), str(config_file), str(results_file)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        static.shutdown()
        demo.shutdown()
    assert proc.returncode == 0, f"browser script failed:\n{proc.stdout}\n{proc.stderr}"
    results = json.loads(results_file.read_text())
    results["x_tester"] = x_test[0:1]
    results["x_image"] = np.rint(x_test[1:2] * 255) / np.float32(255)
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(results["screenshots"]["demo1280"], ROOT / "docs" / "img" / "web_demo.png")
    return results


# ---------- the digit demo ----------

def test_demo_loads_the_bundled_model(browser_results, flax_params):
    demo = browser_results["demo"]
    assert demo["state"] == "ready"
    assert demo["backend"] == "wasm"  # the default for a model this small
    count = sum(int(np.prod(a.shape)) for layer in flax_params.values() for a in layer.values())
    assert f"{count:,} parameters" in demo["modelInfo"]
    assert demo["problems"] == []  # no script error, console error or CSP violation


def test_drawn_mnist_digits_are_recognised(browser_results):
    drawn = browser_results["drawn"]
    assert len(drawn) == 10 and sorted(d["label"] for d in drawn) == list(range(10))
    correct = sum(d["predicted"] == str(d["label"]) for d in drawn)
    assert correct >= 9, f"only {correct}/10 traced digits recognised: {drawn}"


def test_vertical_stroke_is_a_one(browser_results):
    assert browser_results["vertical"]["inkBefore"] > 0
    assert browser_results["vertical"]["predicted"] == "1"


def test_clear_empties_pad_and_prediction(browser_results):
    clear = browser_results["clear"]
    assert clear["ink"] == 0
    assert clear["predicted"] == "–"
    assert clear["bars"] == [0.0] * 10
    assert clear["version"][0] == clear["version"][1]


def test_sample_buttons_predict_like_flax(browser_results, flax_params):
    samples = json.loads((WEB / "samples.json").read_text())["digits"]
    x = np.asarray([d["pixels"] for d in samples], np.float32).reshape(-1, 28, 28, 1) / np.float32(255)
    expected = [str(int(i)) for i in flax_logits(flax_params, x).argmax(axis=1)]
    assert browser_results["samples"] == expected
    # After switching the backend menu to cpu, the last sample is classified again, the same.
    assert browser_results["demo"]["switched"]["prediction"] == expected[-1]


def test_demo_runs_on_every_backend(browser_results, flax_params):
    first = json.loads((WEB / "samples.json").read_text())["digits"][0]["pixels"]
    x = np.asarray(first, np.float32).reshape(1, 28, 28, 1) / np.float32(255)
    expected = str(int(flax_logits(flax_params, x).argmax()))
    for backend, seen in browser_results["demoBackends"].items():
        assert seen["used"] == backend, seen["error"]
        assert seen["predicted"] == expected, backend
        assert seen["latency"].endswith(f"on {backend}")
        assert seen["problems"] == [], backend


def test_demo_escapes_model_text(browser_results):
    """`python -m writer demo DIR` with a model whose metadata holds HTML shows it as text."""
    xss = browser_results["xssDemo"]
    assert xss["state"] == "ready", xss["error"]
    assert PAYLOAD in xss["modelInfo"]
    assert xss["labels"] == [f"{PAYLOAD}{d}" for d in range(10)]
    assert xss["prediction"].startswith(PAYLOAD)
    assert xss["images"] == 0
    assert xss["problems"] == []


# ---------- the model tester ----------

def test_tester_shows_the_demo_model(browser_results, flax_params):
    report = browser_results["tester"]["demoModel"]
    assert report["state"] == "loaded" and report["modelShown"]
    count = sum(int(np.prod(a.shape)) for layer in flax_params.values() for a in layer.values())
    assert f"{count:,}" in report["summary"]
    names = [row[1] for row in report["layers"]]
    assert set(flax_params) <= set(names)
    for name in flax_params:
        row = next(r for r in report["layers"] if r[1] == name)
        params = sum(int(np.prod(a.shape)) for a in flax_params[name].values())
        assert row[4] == f"{params:,}"
    assert json.loads(report["metadata"]) == json.loads((WEB / "model" / "model.json").read_text())["userDefinedMetadata"]
    assert browser_results["tester"]["problems"] == []


@pytest.mark.parametrize("backend", ["cpu", "wasm", "webgl"])
def test_tester_runs_like_flax_on_each_backend(browser_results, flax_params, backend):
    run = browser_results["tester"]["runs"][backend]
    assert run["state"] == "done", run["error"]
    result = run["result"]
    assert result["backend"] == backend and result["runs"] == RUNS
    assert 0 < result["minMs"] <= result["medianMs"]
    (output,) = result["outputs"]
    assert output["shape"] == [1, 10]
    expected = flax_logits(flax_params, browser_results["x_tester"])
    # webgl reorders float32 sums more than cpu/wasm do.
    assert_close(np.asarray(output["values"], np.float32).reshape(1, 10), expected,
                 rtol=1e-4 if backend == "webgl" else 1e-5)


def test_tester_random_input(browser_results):
    run = browser_results["tester"]["random"]
    assert run["state"] == "done", run["error"]
    (output,) = run["result"]["outputs"]
    assert output["shape"] == [1, 10] and all(np.isfinite(output["values"]))


def test_tester_image_input(browser_results, flax_params):
    run = browser_results["tester"]["image"]
    assert run["state"] == "done", run["error"]
    (output,) = run["result"]["outputs"]
    assert_close(np.asarray(output["values"], np.float32).reshape(1, 10),
                 flax_logits(flax_params, browser_results["x_image"]))


def test_pages_stay_offline(browser_results):
    assert browser_results["blockedRequests"] == []


@pytest.mark.parametrize("how", ["files", "folder", "queryParam"])
def test_tester_opens_local_files_and_query(browser_results, how):
    report = browser_results["tester"][how]
    assert report["state"] == "loaded", report["error"]
    assert report["modelShown"] and len(report["layers"]) == 8


BROKEN = {
    # fixture -> words the error must contain
    "missing_shard": ["group1-shard1of1.bin", "HTTP 404"],
    "short_shard": ["100 bytes short"],
    "bad_json": ["not valid JSON"],
    "no_manifest": ["weightsManifest", "random weights"],
    "unknown_inbound": ["do not exist", "nope"],
    "no_model": ["model.json", "HTTP 404"],
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_tester_reports_broken_models(browser_results, name):
    report = browser_results["tester"]["broken"][name]
    assert report["state"] == "error"
    assert not report["modelShown"]
    for words in BROKEN[name]:
        assert words in report["error"], report["error"]


def test_tester_reports_missing_local_shard(browser_results):
    report = browser_results["tester"]["filesMissingShard"]
    assert report["state"] == "error" and not report["modelShown"]
    assert "group1-shard1of1.bin is missing" in report["error"]


def test_tester_escapes_model_text(browser_results):
    xss = browser_results["tester"]["xss"]
    assert xss["state"] == "loaded", xss["error"]
    assert json.loads(xss["metadata"])["note"] == PAYLOAD
    assert PAYLOAD in xss["summary"]  # convertedBy / generatedBy
    assert xss["images"] == 0
    assert xss["problems"] == []


def test_pages_fit_phone_and_desktop_widths(browser_results):
    assert browser_results["demo"]["noHorizontalScroll375"]
    assert browser_results["demo"]["noHorizontalScroll1280"]
    assert browser_results["tester"]["noHorizontalScroll375"]
    assert browser_results["tester"]["noHorizontalScroll1280"]
    for name, path in browser_results["screenshots"].items():
        assert Path(path).stat().st_size > 10_000, name


# ---------- generated files and the static site ----------

def test_generated_files_are_up_to_date():
    """web_demo/model, samples.json and vendor/ equal what scripts/build_demo.py makes now."""
    proc = subprocess.run([sys.executable, "scripts/build_demo.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_committed_model_is_the_converter_output(tmp_path):
    to_tensorflowjs(ROOT / "examples" / "mnist_ckpt", tmp_path / "m", quantize="float16")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(p.name for p in (WEB / "model").iterdir())
    for path in (tmp_path / "m").iterdir():
        assert path.read_bytes() == (WEB / "model" / path.name).read_bytes(), path.name


def test_pages_reference_only_local_files():
    """Offline from any static host: every script and stylesheet is a file of web_demo/."""
    import re

    for page in ("index.html", "tester.html"):
        html = (WEB / page).read_text()
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert refs
        for ref in refs:
            assert "://" not in ref and not ref.startswith("//"), ref
            assert (WEB / ref).is_file(), f"{page} refers to missing {ref}"


# ---------- the demo server and command ----------

def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, b"", ""


def _raw_get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)  # sent as is: no client-side normalisation of '..'
    status = conn.getresponse().status
    conn.close()
    return status


def test_demo_server_maps_model_dir(tmp_path):
    model = tmp_path / "mine"
    to_tensorflowjs(ROOT / "examples" / "mnist_ckpt", model)  # float32: differs from the bundled one
    server = _serve(make_server(model, 0))
    base, port = _url(server), server.server_address[1]
    try:
        status, body, _ = _get(base + "model/model.json")
        assert status == 200 and body == (model / "model.json").read_bytes()
        status, body, _ = _get(base + "model/group1-shard1of1.bin")
        assert body == (model / "group1-shard1of1.bin").read_bytes()
        status, body, _ = _get(base + "index.html")
        assert status == 200 and body == (WEB / "index.html").read_bytes()
        status, _, kind = _get(base + "vendor/tfjs-backend-wasm-simd.wasm")
        assert status == 200 and kind == "application/wasm"
        assert _raw_get(port, "/model/../../../../etc/passwd") == 404
        assert _raw_get(port, "/model/%2e%2e/%2e%2e/%2e%2e/etc/passwd") == 404
    finally:
        server.shutdown()
        server.server_close()


def test_demo_server_defaults_to_bundled_model():
    server = _serve(make_server(None, 0))
    try:
        status, body, _ = _get(_url(server) + "model/model.json")
        assert status == 200 and body == (WEB / "model" / "model.json").read_bytes()
    finally:
        server.shutdown()
        server.server_close()


def test_demo_server_errors(tmp_path):
    with pytest.raises(ConversionError) as err:
        make_server(tmp_path, 0)
    assert err.value.code == "DEMO_MODEL_NOT_FOUND" and str(tmp_path) in err.value.message
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConversionError) as err:
            make_server(None, busy.getsockname()[1])
    assert err.value.code == "PORT_UNAVAILABLE" and "already in use" in err.value.message
    (tmp_path / "index.html").write_text("")
    with pytest.raises(ConversionError) as err:
        make_server(None, 0, site=tmp_path)
    assert err.value.code == "DEMO_FILES_MISSING" and "tester.html" in err.value.message


def test_demo_command_prints_url_and_serves(tmp_path):
    # Ctrl+C as in a terminal: a runner started in the background (`cmd &`) ignores SIGINT, and its
    # children would inherit that, so the demo gets the default disposition back.
    proc = subprocess.Popen([sys.executable, "-m", "writer.demo", str(WEB / "model"), "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        demo_line = next(line for line in lines if "demo:" in line)
        url = demo_line.split("demo:")[1].strip()
        assert url.startswith("http://127.0.0.1:")
        status, body, _ = _get(url)
        assert status == 200 and b'id="pad"' in body
        assert any("tester.html?model=model/model.json" in line for line in lines)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "stopped" in out


@pytest.mark.parametrize("argv,code", [
    (["/nonexistent/model"], "DEMO_MODEL_NOT_FOUND"),
    (["--port", "abc"], "BAD_OPTION"),
    (["--port", "70000"], "BAD_OPTION"),
])
def test_demo_command_errors(argv, code):
    proc = subprocess.run([sys.executable, "-m", "writer.demo", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error[{code}]")
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
