"""The studio as a network service against a hostile local peer (issue 19).

A real studio on 127.0.0.1 gets malformed variants of every route, written byte by byte on raw
sockets: each answer must be one status line, a 4xx/5xx and a JSON error code (never INTERNAL,
never a traceback or a dropped connection). Then the service's bounds: stalled connections,
upload caps and expiry, event-stream resumption, confined model routes, download names, the
streamed zip's memory and the clean-up on SIGTERM are in ``test_studio_process.py``. Last,
hypothesis sends random requests to every route (derandomized, bounded example count).
"""
from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.hostile.studio_client import request, send

DEEP = b"[" * 100_000 + b"]" * 100_000


def mlp_npz(path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(path, **{"params/Dense_0/kernel": rng.standard_normal((8, 4)).astype(np.float32),
                      "params/Dense_0/bias": np.zeros(4, np.float32),
                      "params/Dense_1/kernel": rng.standard_normal((4, 3)).astype(np.float32),
                      "params/Dense_1/bias": np.zeros(3, np.float32)})


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from writer.commands.studio import make_server

    base = tmp_path_factory.mktemp("studio-hostile")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    mlp_npz(root / "small.npz")
    (root / "loop").symlink_to(root / "loop")  # a symlink loop: must not break the listing
    (root / "sub" / "a").symlink_to(root / "sub" / "b")
    (root / "sub" / "b").symlink_to(root / "sub" / "a")
    (base / "secret.bin").write_bytes(b"SECRET" * 100)
    server = make_server(root, 0, max_upload_bytes=64 << 10)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.base = base
    yield server
    server.shutdown()
    server.close()


def port(studio) -> int:
    return studio.server_address[1]


def call(studio, method: str, path: str, headers: dict | None = None, body: bytes = b"", **kw):
    return send(port(studio), request(port(studio), method, path, headers, body, **kw))


def post_json(studio, path: str, form, headers: dict | None = None):
    body = form if isinstance(form, bytes) else json.dumps(form).encode()
    return call(studio, "POST", path, {"Content-Type": "application/json", "X-Studio-Token": getattr(studio, "token", ""),
                                       **(headers or {})}, body)


def converted(studio, out: str) -> str:
    answer = post_json(studio, "/api/convert", {"checkpoint": "small.npz", "out": out})
    assert answer.status == 200, answer.raw[:400]
    job_id = json.loads(answer.body)["job"]
    studio.jobs.get(job_id).wait(60)
    assert studio.jobs.get(job_id).state == "done", studio.jobs.get(job_id).events[-1]
    return job_id


def assert_coded(answer, status: int, code: str) -> None:
    assert answer.status_lines == 1, answer.raw[:600]
    assert (answer.status, answer.code) == (status, code), answer.raw[:600]
    assert answer.headers.get("content-type") == "application/json"


# ---------- malformed variants of every route ----------

JOB = "0123456789abcdef"
TOKEN = object()  # stands for the server's real token in the table below
JSON = {"Content-Type": "application/json", "X-Studio-Token": TOKEN}
MALFORMED = [
    # (what, method, path, headers, body, status, code)
    ("foreign host", "GET", "/api/config", {"Host": "evil.example"}, b"", 403, "HOST_REFUSED"),
    ("list: NUL in dir", "GET", "/api/list?dir=%00", {}, b"", 403, "PATH_OUTSIDE_ROOT"),
    ("list: symlink loop", "GET", "/api/list?dir=loop", {}, b"", 404, "CHECKPOINT_NOT_FOUND"),
    ("list: name too long", "GET", "/api/list?dir=" + "a" * 300, {}, b"", 404, "CHECKPOINT_NOT_FOUND"),
    ("list: path too long", "GET", "/api/list?dir=" + "a/" * 3000, {}, b"", 404, "CHECKPOINT_NOT_FOUND"),
    ("list: a file", "GET", "/api/list?dir=small.npz", {}, b"", 400, "NOT_A_FOLDER"),
    ("list: POST", "POST", "/api/list", JSON, b"{}", 405, "METHOD_NOT_ALLOWED"),
    ("inspect: no token", "POST", "/api/inspect", {"Content-Type": "application/json"}, b"{}", 403, "TOKEN_REFUSED"),
    ("inspect: wrong token", "POST", "/api/inspect", {**JSON, "X-Studio-Token": "x" * 43}, b"{}", 403, "TOKEN_REFUSED"),
    ("inspect: token with NUL", "POST", "/api/inspect", {**JSON, "X-Studio-Token": "\x00\xff"}, b"{}", 403, "TOKEN_REFUSED"),
    ("inspect: text/plain saying json", "POST", "/api/inspect",
     {**JSON, "Content-Type": "text/plain; charset=application/json"}, b'{"checkpoint": "small.npz"}', 415,
     "UNSUPPORTED_MEDIA_TYPE"),
    ("inspect: json suffix type", "POST", "/api/inspect", {**JSON, "Content-Type": "application/jsonx"}, b"{}", 415,
     "UNSUPPORTED_MEDIA_TYPE"),
    ("inspect: nested 100,000 deep", "POST", "/api/inspect", JSON, DEEP, 400, "BAD_REQUEST"),
    ("inspect: Content-Length ²", "POST", "/api/inspect", {**JSON, "Content-Length": b"\xb2"}, b"{}", 400, "BAD_REQUEST"),
    ("inspect: Content-Length -1", "POST", "/api/inspect", {**JSON, "Content-Length": "-1"}, b"{}", 400, "BAD_REQUEST"),
    ("inspect: Content-Length 2 MiB", "POST", "/api/inspect", {**JSON, "Content-Length": str(2 << 20)}, b"{}", 413,
     "REQUEST_TOO_LARGE"),
    ("inspect: not an object", "POST", "/api/inspect", JSON, b"[1, 2]", 400, "BAD_REQUEST"),
    ("inspect: not UTF-8", "POST", "/api/inspect", JSON, b'{"checkpoint": "\xff"}', 400, "BAD_REQUEST"),
    ("inspect: cut short", "POST", "/api/inspect", JSON, b'{"checkpoint": ', 400, "BAD_REQUEST"),
    ("inspect: huge integer", "POST", "/api/inspect", JSON, b'{"input_shape": [' + b"9" * 5000 + b"]}", 400,
     "BAD_REQUEST"),
    ("inspect: input_dtype a boolean", "POST", "/api/inspect", JSON, b'{"checkpoint": "small.npz", "input_dtype": true}',
     400, "BAD_OPTION"),
    ("inspect: input_shape nested", "POST", "/api/inspect", JSON, b'{"checkpoint": "small.npz", "input_shape": [[8]]}',
     400, "BAD_OPTION"),
    ("inspect: module a number", "POST", "/api/inspect", JSON, b'{"checkpoint": "small.npz", "module": 7}', 400,
     "BAD_OPTION"),
    ("inspect: checkpoint through a loop", "POST", "/api/inspect", JSON, b'{"checkpoint": "sub/a"}', 404,
     "CHECKPOINT_NOT_FOUND"),
    ("inspect: checkpoint a list", "POST", "/api/inspect", JSON, b'{"checkpoint": ["small.npz"]}', 400,
     "BAD_OPTION"),
    ("inspect: unknown upload", "POST", "/api/inspect", JSON, b'{"checkpoint": "upload:../../etc/passwd"}', 404,
     "CHECKPOINT_NOT_FOUND"),
    ("convert: CRLF in out", "POST", "/api/convert", JSON,
     b'{"checkpoint": "small.npz", "out": "a\\r\\nX-Injected: 1"}', 400, "BAD_FOLDER_NAME"),
    ("convert: tab in out", "POST", "/api/convert", JSON, b'{"checkpoint": "small.npz", "out": "a\\tb"}', 400,
     "BAD_FOLDER_NAME"),
    ("convert: backslash in out", "POST", "/api/convert", JSON, b'{"checkpoint": "small.npz", "out": "a\\\\b"}', 400,
     "BAD_FOLDER_NAME"),
    ("convert: name too long", "POST", "/api/convert", JSON, b'{"checkpoint": "small.npz", "out": "%s"}' % (b"b" * 300),
     400, "BAD_FOLDER_NAME"),
    ("convert: path too long", "POST", "/api/convert", JSON, b'{"checkpoint": "small.npz", "out": "%s"}' % (b"b/" * 3000),
     400, "BAD_FOLDER_NAME"),
    ("inspect: checkpoint name too long", "POST", "/api/inspect", JSON, b'{"checkpoint": "%s"}' % (b"c" * 300), 404,
     "CHECKPOINT_NOT_FOUND"),
    ("convert: out a list", "POST", "/api/convert", JSON, b'{"checkpoint": "small.npz", "out": ["x"]}', 400,
     "BAD_OPTION"),
    ("convert: lone surrogate in metadata", "POST", "/api/convert", JSON,
     b'{"checkpoint": "small.npz", "out": "sur_out", "metadata": {"k": "\\ud800"}}', 400, "BAD_REQUEST"),
    ("convert: NaN in metadata", "POST", "/api/convert", JSON,
     b'{"checkpoint": "small.npz", "out": "sur_out", "metadata": {"k": NaN}}', 400, "BAD_REQUEST"),
    ("convert: a key twice", "POST", "/api/convert", JSON,
     b'{"checkpoint": "small.npz", "out": "sur_out", "out": "tiny_out"}', 400, "BAD_REQUEST"),
    ("convert: one-byte shards", "POST", "/api/convert", JSON,
     b'{"checkpoint": "small.npz", "out": "tiny_out", "shard_bytes": 1}', 400, "BAD_OPTION"),
    ("convert: quantize an object", "POST", "/api/convert", JSON,
     b'{"checkpoint": "small.npz", "out": "q_out", "quantize": {"a": 1}}', 400, "BAD_OPTION"),
    ("events: unknown job", "GET", f"/api/jobs/{JOB}/events", {}, b"", 404, "JOB_NOT_FOUND"),
    ("events: POST", "POST", f"/api/jobs/{JOB}/events", JSON, b"{}", 405, "METHOD_NOT_ALLOWED"),
    ("cancel: no token", "POST", f"/api/jobs/{JOB}/cancel", {"Content-Type": "application/json"}, b"{}", 403,
     "TOKEN_REFUSED"),
    ("cancel: unknown job", "POST", f"/api/jobs/{JOB}/cancel", JSON, b"{}", 404, "JOB_NOT_FOUND"),
    ("verify: unknown job", "POST", f"/api/jobs/{JOB}/verify", JSON, b"{}", 404, "JOB_NOT_FOUND"),
    ("verify: GET", "GET", f"/api/jobs/{JOB}/verify", {}, b"", 405, "METHOD_NOT_ALLOWED"),
    ("model: unknown job", "GET", f"/api/jobs/{JOB}/model/model.json", {}, b"", 404, "JOB_NOT_FOUND"),
    ("model: climbing name", "GET", f"/api/jobs/{JOB}/model/../../x", {}, b"", 404, "NOT_FOUND"),
    ("download: unknown job", "GET", f"/api/jobs/{JOB}/download.zip", {}, b"", 404, "JOB_NOT_FOUND"),
    ("upload: no token", "POST", "/api/upload?name=a.npz", {}, b"PK", 403, "TOKEN_REFUSED"),
    ("upload: Content-Length ²", "POST", "/api/upload?name=a.npz", {"X-Studio-Token": TOKEN, "Content-Length": "²"},
     b"PK", 400, "BAD_REQUEST"),
    ("upload: GET", "GET", "/api/upload?name=a.npz", {}, b"", 405, "METHOD_NOT_ALLOWED"),
    ("static: unknown file", "GET", "/secret.txt", {}, b"", 404, "NOT_FOUND"),
    ("static: vendor name too long", "GET", "/vendor/" + "a" * 300, {}, b"", 404, "NOT_FOUND"),
    ("static: absolute-form target", "GET", "http://evil.example/", {}, b"", 404, "NOT_FOUND"),
    ("static: bracket authority", "GET", "//[evil/x", {}, b"", 404, "NOT_FOUND"),
    ("list: bracket authority", "GET", "//[::1/api/list?dir=.", {}, b"", 404, "NOT_FOUND"),
    ("any: PUT", "PUT", "/api/config", {}, b"", 501, "METHOD_NOT_ALLOWED"),
]


@pytest.mark.parametrize("what,method,path,headers,body,status,code", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_get_a_coded_4xx(studio, what, method, path, headers, body, status, code):
    headers = {k: getattr(studio, "token", "") if v is TOKEN else v for k, v in headers.items()}
    host = headers.pop("Host", None)
    answer = call(studio, method, path, headers, body, host=host)
    assert_coded(answer, status, code)
    assert not (studio.root.path / "sur_out").exists() and not (studio.root.path / "tiny_out").exists()
    assert not [p for p in studio.root.path.iterdir() if "\n" in p.name or "\r" in p.name]


@pytest.mark.parametrize("raw,status,code", [
    (b"GARBAGE\r\n\r\n", 400, "BAD_REQUEST"),
    (b"GET / HTTP/9.9\r\n\r\n", 505, "BAD_REQUEST"),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "REQUEST_TOO_LARGE"),
    (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", 431, "REQUEST_TOO_LARGE"),
    (b"GET / HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 120 + b"\r\n", 431, "REQUEST_TOO_LARGE"),
], ids=["garbage", "version", "long-target", "long-header", "many-headers"])
def test_malformed_request_heads_get_a_coded_4xx(studio, raw, status, code):
    assert_coded(send(port(studio), raw), status, code)


def test_listing_survives_symlink_loops(studio):
    answer = call(studio, "GET", "/api/list?dir=.")
    assert answer.status == 200
    assert [e["name"] for e in json.loads(answer.body)["entries"]] == ["small.npz", "sub"]
    answer = call(studio, "GET", "/api/list?dir=sub")
    assert answer.status == 200 and json.loads(answer.body)["entries"] == []


def test_config_hands_out_the_token_and_the_origin_check_stays(studio):
    config = json.loads(call(studio, "GET", "/api/config").body)
    assert config["token"] == studio.token and config["token_header"] == "X-Studio-Token" and len(studio.token) >= 32
    answer = post_json(studio, "/api/inspect", {"checkpoint": "small.npz"}, {"Origin": "http://evil.example"})
    assert_coded(answer, 403, "HOST_REFUSED")
    answer = post_json(studio, "/api/inspect", {"checkpoint": "small.npz"})
    assert answer.status == 200 and json.loads(answer.body)["checkpoint"] == "small.npz"


# ---------- output names and download names ----------

@pytest.mark.parametrize("out,fallback", [("模型_out", "___out.zip"), ('say "hi"', "say _hi_.zip"),
                                          ("50%_done", "50__done.zip")])
def test_any_printable_name_downloads_with_rfc6266_filename(studio, out, fallback):
    job_id = converted(studio, out)
    answer = call(studio, "GET", f"/api/jobs/{job_id}/download.zip")
    assert answer.status == 200 and answer.status_lines == 1
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith(f'attachment; filename="{fallback}"; filename*=UTF-8\'\'')
    from urllib.parse import unquote
    assert unquote(disposition.split("''", 1)[1]) == f"{out}.zip"
    with zipfile.ZipFile(io.BytesIO(answer.body)) as archive:
        assert sorted(archive.namelist()) == sorted(f"{out}/{p.name}" for p in (studio.root.path / out).iterdir())
    shutil.rmtree(studio.root.path / out)


# ---------- event stream ----------

def test_event_stream_resume_past_the_end_and_head(studio):
    job_id = converted(studio, "events_out")
    path = f"/api/jobs/{job_id}/events"
    full = call(studio, "GET", path)
    events = [json.loads(line[6:]) for line in full.body.decode().splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "done"
    for last in (str(len(events) - 1), str(len(events) + 5), "999999999"):
        answer = send(port(studio), request(port(studio), "GET", path, {"Last-Event-ID": last}), timeout=5)
        data = [json.loads(line[6:]) for line in answer.body.decode().splitlines() if line.startswith("data: ")]
        assert data == [events[-1]] and answer.seconds < 4, last  # the outcome once, then the stream closes
    for bad in ("9" * 5000, b"\xb2", "-1", "1e3"):
        assert_coded(call(studio, "GET", path, {"Last-Event-ID": bad}), 400, "BAD_REQUEST")
    for route in ("events", "download.zip", "model/model.json"):
        answer = send(port(studio), request(port(studio), "HEAD", f"/api/jobs/{job_id}/{route}"), timeout=5)
        assert answer.status == 200 and answer.body == b"" and answer.seconds < 4, route
    shutil.rmtree(studio.root.path / "events_out")


# ---------- model routes confined to the model folder ----------

def test_model_routes_serve_only_plain_regular_files_of_the_manifest(studio):
    job_id = converted(studio, "confined_out")
    folder = studio.root.path / "confined_out"
    shard = json.loads((folder / "model.json").read_text())["weightsManifest"][0]["paths"][0]
    assert call(studio, "GET", f"/api/jobs/{job_id}/model/{shard}").body == (folder / shard).read_bytes()
    (folder / "link.bin").symlink_to(studio.base / "secret.bin")
    os.mkfifo(folder / "fifo.bin")
    (folder / "extra.bin").write_bytes(b"not in the manifest")
    doc = json.loads((folder / "model.json").read_text())
    doc["weightsManifest"][0]["paths"] += ["link.bin", "fifo.bin", "../secret.bin", str(studio.base / "secret.bin")]
    (folder / "model.json").write_text(json.dumps(doc))
    for name in ("link.bin", "fifo.bin", "extra.bin", "..%2Fsecret.bin", "secret.bin"):
        answer = send(port(studio), request(port(studio), "GET", f"/api/jobs/{job_id}/model/{name}"), timeout=5)
        assert_coded(answer, 404, "NOT_FOUND")
        assert b"SECRET" not in answer.raw
    answer = call(studio, "GET", f"/api/jobs/{job_id}/download.zip")
    with zipfile.ZipFile(io.BytesIO(answer.body)) as archive:
        assert sorted(archive.namelist()) == sorted(f"confined_out/{n}" for n in ("extra.bin", "model.json", shard))
    shutil.rmtree(folder)
    folder.symlink_to(studio.base)  # the output folder itself swapped for a link out of ROOT
    assert_coded(call(studio, "GET", f"/api/jobs/{job_id}/model/model.json"), 404, "JOB_NOT_FOUND")
    assert_coded(call(studio, "GET", f"/api/jobs/{job_id}/download.zip"), 404, "JOB_NOT_FOUND")
    folder.unlink()


# ---------- uploads ----------

def upload(studio, name: str, size: int):
    return call(studio, "POST", f"/api/upload?name={name}", {"X-Studio-Token": getattr(studio, "token", "")}, bytes(size))


def test_uploads_have_a_total_cap_and_expire(studio):
    uploads = studio.uploads
    assert uploads.folder.parent == studio.state  # all state in one temporary folder
    handles = [json.loads(upload(studio, f"u{i}.npz", 64 << 10).body)["checkpoint"] for i in range(4)]
    assert uploads.used() == 4 * (64 << 10) == uploads.total
    assert_coded(upload(studio, "u4.npz", 1), 507, "UPLOADS_FULL")
    uploads.ttl = 0.2  # abandoned: unused for longer than the expiry
    time.sleep(0.3)
    answer = upload(studio, "u5.npz", 64 << 10)
    assert answer.status == 200 and uploads.used() == 64 << 10
    assert sorted(p.name for p in uploads.folder.iterdir()) == [json.loads(answer.body)["checkpoint"][7:23]]
    assert_coded(post_json(studio, "/api/inspect", {"checkpoint": handles[0]}), 404, "CHECKPOINT_NOT_FOUND")
    uploads.ttl = 3600.0


# ---------- connections ----------

def test_stalled_connections_do_not_lock_others_out(studio):
    stalled, threads = [], threading.active_count()
    try:
        for _ in range(200):  # each sends one header line and stalls
            conn = socket.create_connection(("127.0.0.1", port(studio)), timeout=10)
            conn.sendall(f"GET /api/config HTTP/1.1\r\nHost: 127.0.0.1:{port(studio)}\r\n".encode())
            stalled.append(conn)
        started = time.monotonic()
        answer = send(port(studio), request(port(studio), "GET", "/api/config"), timeout=10)
        assert answer.status == 200 and time.monotonic() - started < 3
        time.sleep(0.2)  # the shut-down connections' threads end
        assert threading.active_count() - threads <= 64  # the cap holds: stalled ones were shut to make room
    finally:
        for conn in stalled:
            conn.close()


def test_every_slot_busy_gets_a_coded_503(studio):
    from writer.commands.studio.connections import ConnectionGate

    real, studio.gate = studio.gate, ConnectionGate(limit=0, header_seconds=10)
    try:
        assert_coded(call(studio, "GET", "/api/config"), 503, "SERVER_BUSY")
    finally:
        studio.gate = real


def test_a_stalled_request_times_out_with_a_coded_408(studio, monkeypatch):
    from writer.commands.studio import handler

    monkeypatch.setattr(handler.StudioHandler, "timeout", 0.5)
    with socket.create_connection(("127.0.0.1", port(studio)), timeout=10) as conn:
        conn.sendall(f"GET /api/config HTTP/1.1\r\nHost: 127.0.0.1:{port(studio)}\r\n".encode())
        started, data = time.monotonic(), b""
        while chunk := conn.recv(65536):
            data += chunk
    from tests.hostile.studio_client import parse
    assert_coded(parse(data), 408, "REQUEST_TIMEOUT")
    assert time.monotonic() - started < 5
    assert re.match(rb"HTTP/1\.[01] 408 ", data)


# ---------- hypothesis: random requests to every route ----------

TEXT = st.one_of(st.text(st.characters(codec="utf-8"), max_size=40),
                 st.builds(lambda part, n: part * n, st.sampled_from(["a", "a/", "../", "é"]), st.integers(100, 3000)))
PATHS = st.one_of(
    st.sampled_from(["/", "/studio.js", "/vendor/tf.es2017.min.js", "/troubleshooting", "/api/config", "/api/list",
                     "/api/inspect", "/api/convert", "/api/upload?name=a.npz"]),
    st.builds(lambda route, job, tail: f"/api/jobs/{job}/{route}{tail}",
              st.sampled_from(["events", "cancel", "verify", "download.zip", "model/"]),
              st.sampled_from(["JOB", "0123456789abcdef", "xyz"]), st.sampled_from(["", "model.json", "x.bin", "%2e%2e"])),
    st.builds(lambda route, value: f"{route}{quote(value)}", st.sampled_from(["/api/list?dir=", "/api/upload?name=",
                                                                              "/vendor/", "/"]), TEXT),
)
HEADER_VALUES = {
    "Content-Type": st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                     "text/plain; charset=application/json", "APPLICATION/JSON", ""]),
    "Content-Length": st.one_of(st.sampled_from(["0", "-1", "²", "1e3", " 5", "9" * 30]), st.integers(0, 5).map(str)),
    "Last-Event-ID": st.one_of(st.sampled_from(["0", "3", "999999999", "9" * 5000, "²", "-1"]), TEXT),
    "X-Studio-Token": st.sampled_from(["TOKEN", "wrong", ""]),
    "Origin": st.sampled_from(["http://evil.example", "null", "http://127.0.0.1"]),
}
HEADERS = st.dictionaries(st.sampled_from(sorted(HEADER_VALUES)), st.none(), max_size=5).flatmap(
    lambda keys: st.fixed_dictionaries({k: HEADER_VALUES[k] for k in keys}))
FORM_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 1 << 70), TEXT, st.lists(st.integers(-1, 64), max_size=4),
                        st.dictionaries(TEXT, TEXT, max_size=3), st.sampled_from(["small.npz", "loop", "sub/a", "upload:x/y.npz",
                                                                                  "../x", "\ud800", "a\r\nb"]))
FORMS = st.dictionaries(st.sampled_from(["checkpoint", "out", "module", "input_shape", "input_dtype", "quantize",
                                         "shard_bytes", "optimize", "metadata", "force"]), FORM_VALUES, max_size=6)
BODIES = st.one_of(FORMS.map(lambda f: json.dumps(f).encode("utf-8", "surrogatepass")), st.binary(max_size=64),
                   st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n), st.just(b""))


@settings(max_examples=250, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS"]), path=PATHS, headers=HEADERS, body=BODIES)
@example(method="POST", path="/api/inspect", headers={"Content-Type": "application/json", "X-Studio-Token": "TOKEN"},
         body=DEEP)
@example(method="POST", path="/api/convert", headers={"Content-Length": "²", "X-Studio-Token": "TOKEN"}, body=b"{}")
@example(method="GET", path="/api/jobs/JOB/events", headers={"Last-Event-ID": "9" * 5000}, body=b"")
def test_fuzzed_requests_get_one_coded_answer(studio, fuzz_job, method, path, headers, body):
    headers = {k: studio.token if v == "TOKEN" else v for k, v in headers.items()}
    raw = request(port(studio), method, path.replace("JOB", fuzz_job), headers, body)
    answer = send(port(studio), raw, timeout=20)
    assert answer.status_lines == 1 and 200 <= answer.status < 600, answer.raw[:300]
    if answer.status >= 400 and method != "HEAD":  # HEAD: the same headers, no body
        assert answer.code not in (None, "INTERNAL"), answer.raw[:600]
    assert "x-injected" not in answer.headers
    for job in list(studio.jobs._jobs.values()):
        job.wait(30)  # conversions the fuzzer started end before the next request (bounded work)


@pytest.fixture(scope="module")
def fuzz_job(studio):
    return converted(studio, "fuzz_out")


def test_a_dribbled_json_body_times_out_with_a_coded_408(studio, monkeypatch):
    from tests.hostile.studio_client import parse
    from writer.commands.studio import handler

    monkeypatch.setattr(handler, "READ_TIMEOUT_SECONDS", 1.0)  # the whole body's deadline
    head = request(port(studio), "POST", "/api/inspect", {**{k: v for k, v in JSON.items() if v is not TOKEN},
                                                          "X-Studio-Token": studio.token, "Content-Length": "100"})
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port(studio)), timeout=10) as conn:
        conn.sendall(head)
        # One byte every 0.1 s (each read is quick, the whole never comes) until the answer is there.
        while not select.select([conn], [], [], 0.1)[0] and time.monotonic() - started < 3:
            conn.sendall(b" ")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    assert_coded(parse(data), 408, "REQUEST_TIMEOUT")
    assert time.monotonic() - started < 4


def test_a_dribbled_upload_is_cut_off(studio):
    from tests.hostile.studio_client import parse

    studio.uploads.grace_seconds, studio.uploads.min_rate = 0.5, 1 << 30  # patience: 0.5 s for any size
    head = request(port(studio), "POST", "/api/upload?name=slow.npz", {"X-Studio-Token": studio.token,
                                                                      "Content-Length": str(32 << 10)})
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port(studio)), timeout=10) as conn:
            conn.sendall(head)
            while not select.select([conn], [], [], 0.05)[0] and time.monotonic() - started < 3:
                conn.sendall(b"\0" * 16)  # 320 bytes/s: every read is quick, the whole would take 100 s
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
    finally:
        studio.uploads.grace_seconds, studio.uploads.min_rate = 20.0, 64 << 10
    assert_coded(parse(data), 400, "UPLOAD_REFUSED")
    assert time.monotonic() - started < 3 and studio.uploads.used() <= 64 << 10


def test_only_the_last_finished_jobs_are_kept(studio, monkeypatch):
    from writer.commands.studio import jobs

    monkeypatch.setattr(jobs, "KEEP_FINISHED", 1)
    first, second, third = (converted(studio, f"kept_{i}") for i in range(3))
    assert_coded(call(studio, "GET", f"/api/jobs/{first}/events"), 404, "JOB_NOT_FOUND")
    assert call(studio, "HEAD", f"/api/jobs/{second}/events").status == 200
    assert call(studio, "HEAD", f"/api/jobs/{third}/events").status == 200
    for i in range(3):
        shutil.rmtree(studio.root.path / f"kept_{i}")
