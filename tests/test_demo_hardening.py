"""``python -m writer demo`` as an attacker meets it: malformed paths, foreign Host headers, listings;
and the pages still working in real Chromium under the server's Content-Security-Policy."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))


@pytest.fixture(scope="module")
def demo_server():
    """The real command in a child process, so its console output can be checked for tracebacks."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "writer", "demo", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
    yield port, proc
    proc.terminate()
    proc.wait(10)


def raw_get(port: int, path: str, host: str | None) -> tuple[int, dict[str, str]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        request = f"GET {path} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host is not None else "") + "Connection: close\r\n\r\n"
        conn.sendall(request.encode("latin-1"))
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    return int(head[0].split()[1]), headers


@pytest.mark.parametrize("path", ["/%00", "/model/%00.json", "/%ff%fe", "/a%0d%0aSet-Cookie:x"])
def test_malformed_paths_get_400_without_traceback(demo_server, path):
    port, proc = demo_server
    status, _ = raw_get(port, path, f"127.0.0.1:{port}")
    assert status == 400


def test_no_directory_listings(demo_server):
    port, _ = demo_server
    assert raw_get(port, "/vendor/", f"127.0.0.1:{port}")[0] == 404
    assert raw_get(port, "/model/", f"localhost:{port}")[0] == 404


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "localhost:1", None])
def test_only_local_host_names_are_served(demo_server, host):
    port, _ = demo_server
    status, _ = raw_get(port, "/model/model.json", host.format(port=port) if host else None)
    assert status in (400, 421)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "localhost", "LOCALHOST:{port}"])
def test_local_host_names_get_the_security_headers(demo_server, host):
    port, _ = demo_server
    status, headers = raw_get(port, "/", host.format(port=port))
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def test_console_shows_no_traceback(demo_server):
    port, proc = demo_server
    for path in ("/%00", "/%ff", "/vendor/"):
        raw_get(port, path, f"127.0.0.1:{port}")
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err, err[-1000:]


def test_pages_work_under_the_servers_csp_in_chromium(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `bash scripts/setup.sh --dev`")
    import threading

    from writer.commands.demo import make_server

    server = make_server(None, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    results = tmp_path / "results.json"
    try:
        proc = subprocess.run(["node", str(ROOT / "tests" / "web" / "check_demo_server.mjs"),
                               f"http://127.0.0.1:{server.server_address[1]}/", str(results)],
                              cwd=ROOT, capture_output=True, text=True, timeout=240)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(results.read_text())
    for page in ("demo", "tester"):
        assert "default-src 'self'" in out[page]["headers"]["content-security-policy"]
        assert out[page]["headers"]["x-content-type-options"] == "nosniff"
        assert out[page]["csp"] == [] and out[page]["problems"] == [], out[page]
    assert out["demo"]["state"] == "ready" and out["demo"]["prediction"]
    assert out["tester"]["state"] == "loaded"
