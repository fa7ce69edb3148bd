"""The studio as a process: the download zip streams (server RSS independent of the model size),
and SIGTERM removes every bit of state it kept (issue 19).

One ``python -m writer studio`` child serves a folder holding a checkpoint of 24 MiB of random
float32 (incompressible: the zip is as large as the model). Its peak RSS is read from
``/proc/PID/status`` (VmHWM, reset through ``/proc/PID/clear_refs`` before the download).
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.hostile.peak import ROOT
from tests.hostile.studio_client import request, send

MODEL_MIB = 24
TENSOR_MIB = 4


def hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def reset_hwm(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets the peak RSS to the current RSS
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def studio_process(tmp_path_factory):
    base = tmp_path_factory.mktemp("studio-process")
    root, state = base / "root", base / "tmp"
    root.mkdir()
    state.mkdir()
    rng = np.random.default_rng(0)
    count = MODEL_MIB // TENSOR_MIB
    np.savez(root / "wide.npz", **{f"params/Dense_{i}/kernel": rng.random((1024, 1024), np.float32) for i in range(count)},
             **{f"params/Dense_{i}/bias": np.zeros(1024, np.float32) for i in range(count)})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(state), "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen([sys.executable, "-m", "writer", "studio", str(root), "--port", "0", "--max-upload-mb", "1"],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = child.stdout.readline() + child.stdout.readline()
        port = int(banner.split("http://127.0.0.1:")[1].split("/")[0])
        yield child, port, root, state
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(30)


def api(port: int, method: str, path: str, token: str = "", body: bytes = b"", **headers):
    headers = {"X-Studio-Token": token, **({"Content-Type": "application/json"} if body[:1] == b"{" else {}), **headers}
    return send(port, request(port, method, path, headers, body), timeout=120)


def test_download_zip_streams_with_bounded_memory_and_sigterm_cleans_up(studio_process):
    child, port, root, state = studio_process
    token = json.loads(api(port, "GET", "/api/config").body).get("token", "")
    answer = api(port, "POST", "/api/convert", token, json.dumps({"checkpoint": "wide.npz", "out": "wide_tfjs"}).encode())
    assert answer.status == 200, answer.raw[:500]
    job = json.loads(answer.body)["job"]
    events = api(port, "GET", f"/api/jobs/{job}/events")  # follows the job until its final event
    assert b'"type": "done"' in events.body, events.body[-500:]
    output = sum(p.stat().st_size for p in (root / "wide_tfjs").iterdir())
    assert output > (MODEL_MIB - 1) << 20

    assert reset_hwm(child.pid)
    before = hwm_mib(child.pid)
    started = time.monotonic()
    download = send(port, request(port, "GET", f"/api/jobs/{job}/download.zip"), timeout=120)
    growth = hwm_mib(child.pid) - before
    assert download.status == 200 and download.status_lines == 1
    with zipfile.ZipFile(io.BytesIO(download.body)) as archive:
        assert archive.testzip() is None
        assert sum(i.file_size for i in archive.infolist()) == output
    print(f"\nzip of {output / 2**20:.1f} MiB: server peak RSS +{growth:.1f} MiB, {time.monotonic() - started:.2f} s")
    assert growth < 12, f"the server's peak RSS grew {growth:.1f} MiB while sending a {output >> 20} MiB zip"

    upload = api(port, "POST", "/api/upload?name=u.npz", token, bytes(1000))
    assert upload.status == 200
    assert [p.name.startswith("flax2tfjs-studio-") for p in state.iterdir()] == [True]  # one state folder
    child.send_signal(signal.SIGTERM)
    assert child.wait(30) == 0
    assert list(state.iterdir()) == []  # uploads and every other bit of state are gone
    assert "stopped" in child.stdout.read()
