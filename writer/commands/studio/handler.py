"""HTTP routes of the studio: static page, JSON API, Server-Sent Events, model files and zip.

Every response carries ``X-Content-Type-Options: nosniff`` and a Content-Security-Policy;
requests whose Host is not 127.0.0.1/localhost (DNS rebinding) or whose Origin is another
site (cross-site POSTs) are refused; POSTs also need the per-launch token of ``/api/config``
in ``X-Studio-Token``; there is no directory listing anywhere. Every failed request is
answered with a 4xx/5xx status and ``{"error": {"code", ...}}``; a failure after the status
line went out closes the connection instead of sending a second one.
"""
from __future__ import annotations

import hmac
import io
import json
import os
import re
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from topology.infer import POOL_CHOICES, TEMPLATE_ACTIVATIONS
from topology.vocabulary.errors import ConversionError
from writer.convert import ConvertOptions
from writer.flags import default_of
from writer.commands.inspect import inspect_checkpoint
from writer.presets import PRESETS
from writer.commands.studio import site
from writer.commands.studio.classes import file_classes
from writer.commands.studio.archive import write_zip
from writer.commands.studio.jobs import error_event
from writer.commands.studio.model_files import open_regular, served_names
from writer.commands.studio.options import convert_options, verify_options
from writer.commands.studio.paths import UPLOAD_PREFIX
from writer.commands.studio.request_rules import (MAX_JSON_BYTES, attachment, content_length, folder_name, json_object,
                                         last_event_id)
from writer.verify import verify

CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self' blob: data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
TOKEN_HEADER = "X-Studio-Token"
READ_TIMEOUT_SECONDS = 20.0  # per read or write on a connection; SSE sends a keepalive every 10 s
CHUNK = 1 << 20
STATUS = {"PATH_OUTSIDE_ROOT": 403, "HOST_REFUSED": 403, "TOKEN_REFUSED": 403, "NOT_FOUND": 404,
          "JOB_NOT_FOUND": 404, "CHECKPOINT_NOT_FOUND": 404, "METHOD_NOT_ALLOWED": 405, "REQUEST_TIMEOUT": 408,
          "OUTPUT_BUSY": 409,
          "UPLOAD_TOO_LARGE": 413, "REQUEST_TOO_LARGE": 413, "UNSUPPORTED_MEDIA_TYPE": 415, "INTERNAL": 500,
          "SERVER_BUSY": 503, "UPLOADS_FULL": 507}
# Errors the standard library's request parser sends (bad request line, headers too long...).
PARSER_CODES = {400: "BAD_REQUEST", 408: "REQUEST_TIMEOUT", 413: "REQUEST_TOO_LARGE", 414: "REQUEST_TOO_LARGE",
                431: "REQUEST_TOO_LARGE", 501: "METHOD_NOT_ALLOWED", 505: "BAD_REQUEST"}
GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def error_body(err: ConversionError, presenter: Any = None) -> bytes:
    """The JSON body of an error answer: ``{"error": {"code", "message", "hint", "doc"}}``, worded for the
    page (paths relative to ROOT, ``page_hint``, ``controls``) when the server's ``presenter`` is given."""
    body = {"error": error_event(err)}
    return json.dumps(presenter.for_page(body) if presenter is not None else body).encode()


class StudioHandler(BaseHTTPRequestHandler):
    """Routes; the server object carries ``root``, ``uploads``, ``jobs``, ``gate`` and ``token``."""

    server_version = "flax2tfjs-studio"
    timeout = READ_TIMEOUT_SECONDS  # setup() puts it on the socket: a stalled peer cannot hold a thread forever

    # ---------- plumbing ----------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.server.gate.headers_read(self.connection)  # serving now: no longer a stalled connection to drop
        return ok

    def handle_one_request(self) -> None:
        """The standard library's, plus a coded answer when the peer stalls and no crash when it goes."""
        self._started = False  # True once a status line went out: no second one may follow
        try:
            super().handle_one_request()
        except GONE:
            self.close_connection = True
        except OSError:  # shut down by the connection gate, or a socket error: nothing to answer
            self.close_connection = True

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        # The standard library catches a read timeout itself and only logs it: answer it here.
        if format.startswith("Request timed out") and not getattr(self, "_started", True):
            self._error(ConversionError("REQUEST_TIMEOUT", f"the request did not arrive within "
                                        f"{READ_TIMEOUT_SECONDS:.0f} s", "send the whole request at once"))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors of the request parser, as JSON with a code like every other answer."""
        try:
            text = message or HTTPStatus(code).phrase
        except ValueError:
            text = str(code)
        err = ConversionError(PARSER_CODES.get(code, "BAD_REQUEST"), f"malformed request: {text}",
                              "send a plain HTTP/1.1 request, as a browser does")
        self._error(err, code)

    def _headers(self, status: int, content_type: str, length: int | None = None, extra: dict | None = None) -> None:
        headers = {"Content-Type": content_type, **({"Content-Length": str(length)} if length is not None else {}),
                   "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP,
                   "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", **(extra or {})}
        for key, value in headers.items():  # a value with a line break would split the response
            if not re.fullmatch(r"[\x20-\x7e]*", value):
                raise ValueError(f"header {key} has a character outside printable ASCII")
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self._started = True

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self._headers(status, content_type, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(self.server.presenter.for_page(value)).encode(), "application/json")

    def _error(self, err: ConversionError, status: int | None = None) -> None:
        self.close_connection = True
        if getattr(self, "_started", False):
            return  # the answer is under way: closing the connection is the only signal left
        self._headers_buffer = []  # whatever a failed answer had queued is dropped, not sent before this one
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # 0.9 answers have no status line: a bad request line gets one
        try:
            self._send(status or STATUS.get(err.code, 400), error_body(err, getattr(self.server, "presenter", None)),
                       "application/json",
                       {"Connection": "close"})
        except (OSError, ValueError):
            pass  # the peer is gone

    def _allowed(self) -> bool:
        port = self.server.server_address[1]
        hosts = {f"{h}:{port}" for h in ("127.0.0.1", "localhost")} | {"127.0.0.1", "localhost"}
        if self.headers.get("Host", "") not in hosts:
            return False
        origin = self.headers.get("Origin")
        return origin is None or origin in {f"http://{h}" for h in hosts}

    def _check_token(self) -> None:
        given = self.headers.get(TOKEN_HEADER, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, self.server.token.encode()):
            raise ConversionError("TOKEN_REFUSED", f"the request lacks this studio's {TOKEN_HEADER}",
                                  "use the studio's page (it reads the token from /api/config); "
                                  "after a restart, reload the page")

    def _route(self, method: str) -> None:
        try:
            if not self._allowed():
                raise ConversionError("HOST_REFUSED", "this studio answers only http://127.0.0.1 and "
                                      "http://localhost on its own port", "open the URL the studio printed")
            target, _, query_text = self.path.partition("#")[0].partition("?")  # no urlsplit: it raises on some targets
            path = target if target.startswith("/") else ""
            query = dict(urllib.parse.parse_qsl(query_text))
            for pattern, handler in ROUTES[method]:
                match = re.fullmatch(pattern, path)
                if match:
                    if method == "POST":
                        self._check_token()
                    handler(self, query, *match.groups())
                    return
            other = "POST" if method == "GET" else "GET"
            if any(re.fullmatch(pattern, path) for pattern, _ in ROUTES[other]):
                raise ConversionError("METHOD_NOT_ALLOWED", f"{path} answers {other}, not {self.command}",
                                      f"send a {other} request")
            self._not_found()
        except ConversionError as err:
            self._error(err)
        except TimeoutError:
            self._error(ConversionError("REQUEST_TIMEOUT", f"the request body did not arrive within "
                                        f"{READ_TIMEOUT_SECONDS:.0f} s", "send the whole request at once"))
        except GONE:
            self.close_connection = True  # the page went away
        except Exception as exc:  # a fault of the studio: a coded answer, never a dropped connection
            self._error(ConversionError("INTERNAL", f"{type(exc).__name__}: {exc}",
                                        "this is a bug in flax2tfjs; report it with what you clicked"))

    def _not_found(self) -> None:
        path = self.path.partition("?")[0][:200]
        self._error(ConversionError("NOT_FOUND", f"nothing at {path!r}", "open /"))

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def _length(self) -> int | None:
        return content_length(self.headers.get("Content-Length"))

    def _body(self) -> dict:
        length = self._length() or 0
        if length > MAX_JSON_BYTES:
            raise ConversionError("REQUEST_TOO_LARGE", f"the JSON body is {length:,} bytes; at most {MAX_JSON_BYTES:,}",
                                  "send a smaller form (metadata of a few KiB)")
        return json_object(self._read_body(length), self.headers.get("Content-Type"))

    def _read_body(self, length: int) -> bytes:
        """``length`` bytes of body within READ_TIMEOUT_SECONDS in all (a dribbling peer holds no slot longer)."""
        deadline, chunks, remaining = time.monotonic() + READ_TIMEOUT_SECONDS, [], length
        while remaining > 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the body took too long")
            chunk = self.rfile.read1(remaining)
            if not chunk:
                break  # cut short: the JSON parser says what is wrong
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _checkpoint(self, text: Any) -> Path:
        if not isinstance(text, str) or not text.strip():
            raise ConversionError("BAD_OPTION", "no checkpoint given", "pick a checkpoint from the list, or drop one")
        if text.startswith(UPLOAD_PREFIX):
            return self.server.uploads.resolve(text)
        return self.server.root.resolve(text, must_exist=True)

    def _stream_file(self, source: io.BufferedReader, content_type: str, size: int) -> None:
        self._headers(200, content_type, size)
        if self.command == "HEAD":
            return
        while chunk := source.read(CHUNK):
            self.wfile.write(chunk)

    # ---------- routes ----------

    def static(self, query: dict, route: str = "") -> None:
        file = site.static_file(route)
        if file is None or not file.is_file():
            return self._not_found()
        self._send(200, file.read_bytes(), site.CONTENT_TYPES.get(file.suffix, "application/octet-stream"))

    def troubleshooting(self, query: dict) -> None:
        doc = site.troubleshooting_path()
        text = doc.read_text(encoding="utf-8") if doc is not None and doc.is_file() else (  # an installed wheel has no docs/
            "# Troubleshooting\n\nThe guide by error code is `docs/troubleshooting.md` in the flax2tfjs "
            "source repository; this installation does not include it.")
        self._send(200, site.troubleshooting_html(text).encode(), site.CONTENT_TYPES[".html"])

    def config(self, query: dict) -> None:
        self._json({"root": self.server.root.path.name or str(self.server.root.path),
                    "optimize": default_of(ConvertOptions, "optimize"), "presets": PRESETS,
                    "max_upload_bytes": self.server.uploads.limit, "token": self.server.token,
                    "token_header": TOKEN_HEADER,
                    "activations": list(TEMPLATE_ACTIVATIONS), "pools": list(POOL_CHOICES),
                    "activation": default_of(ConvertOptions, "activation"), "pool": default_of(ConvertOptions, "pool")})

    def listing(self, query: dict) -> None:
        root = self.server.root
        folder = query.get("dir", ".")
        entries = root.listing(folder)
        self._json({"dir": root.relative(root.resolve(folder)), "entries": [e.to_json() for e in entries]})

    def upload(self, query: dict) -> None:
        handle = self.server.uploads.save(query.get("name", ""), self._length(), self.rfile)
        self._json({"checkpoint": handle})

    def inspect(self, query: dict) -> None:
        body = self._body()
        checkpoint = self._checkpoint(body.get("checkpoint"))
        options = convert_options(body, self.server.root, inspect_only=True)
        report = inspect_checkpoint(checkpoint, options).to_json()
        report["checkpoint"] = body["checkpoint"]  # as the user named it, not the server's absolute path
        report["suggested_out"] = self.server.root.free_output(body["checkpoint"])
        self._json(report)

    def suggest(self, query: dict) -> None:
        self._json({"suggested_out": self.server.root.free_output(query.get("checkpoint", ""))})

    def classes(self, query: dict) -> None:
        file = query.get("file", "")
        if not file.endswith(".py"):
            raise ConversionError("BAD_MODULE_SPEC", f"{file!r} is not a .py file", "pick a .py file from the list")
        self._json({"file": file, "classes": file_classes(self.server.root.resolve(file, must_exist=True))})

    def convert(self, query: dict) -> None:
        body = self._body()
        checkpoint = self._checkpoint(body.get("checkpoint"))
        out = folder_name(body.get("out"))
        if out in (".", "./"):
            raise ConversionError("BAD_OPTION", "no output folder given", "name a new folder, e.g. mnist_tfjs")
        out_dir = self.server.root.resolve(out)
        if out_dir == self.server.root.path or out_dir in checkpoint.parents or out_dir == checkpoint:
            raise ConversionError("BAD_OPTION", f"{out} would overwrite the studio folder or the checkpoint",
                                  "name a new folder")
        job = self.server.jobs.start(checkpoint, out_dir, convert_options(body, self.server.root), body)
        self._json({"job": job.id, "out": self.server.root.relative(out_dir)})

    def events(self, query: dict, job_id: str) -> None:
        job = self.server.jobs.get(job_id)
        start = last_event_id(self.headers.get("Last-Event-ID"))  # a reconnecting EventSource resumes after it
        self._headers(200, "text/event-stream", extra={"Connection": "close"})
        self.close_connection = True
        if self.command == "HEAD":
            return
        try:
            for event in job.follow(start):
                if event is None:
                    self.wfile.write(b": keepalive\n\n")
                else:
                    shown = self.server.presenter.for_page(event)  # paths relative to ROOT, page hints
                    self.wfile.write(f"id: {event['seq']}\ndata: {json.dumps(shown)}\n\n".encode())
                self.wfile.flush()
        except (OSError, ValueError):
            pass  # the page went away (or stalled past the timeout); the job goes on

    def cancel(self, query: dict, job_id: str) -> None:
        job = self.server.jobs.get(job_id)
        job.cancel()
        self._json({"job": job.id, "state": job.state})

    def _done_job(self, job_id: str):
        job = self.server.jobs.get(job_id)
        if job.state != "done":
            raise ConversionError("JOB_NOT_FOUND", f"conversion {job_id} has no output ({job.state})",
                                  "convert first, and wait until it is done")
        return job

    def verify(self, query: dict, job_id: str) -> None:
        job = self._done_job(job_id)
        options = verify_options(job.request, self.server.root)
        self._json(verify(job.out_dir, job.checkpoint, options, progress=False).to_json())

    def _output_folder(self, job) -> Path:
        """The job's output folder, if it is still a real folder inside ROOT (not swapped for a link)."""
        folder = job.out_dir
        if folder.is_symlink() or not folder.is_dir() or not self.server.root.contains(folder.resolve()):
            raise ConversionError("JOB_NOT_FOUND", f"the output of conversion {job.id} is no longer a folder "
                                  "inside ROOT", "convert again")
        return folder

    def model_file(self, query: dict, job_id: str, name: str) -> None:
        folder = self._output_folder(self._done_job(job_id))
        if name not in served_names(folder):
            return self._not_found()
        try:
            source = open_regular(folder / name)
        except OSError:
            return self._not_found()
        with source:
            kind = "application/json" if name.endswith(".json") else "application/octet-stream"
            self._stream_file(source, kind, os.fstat(source.fileno()).st_size)

    def download(self, query: dict, job_id: str) -> None:
        folder = self._output_folder(self._done_job(job_id))
        # Streamed as it is made: no Content-Length, the end of the body is the end of the connection.
        self._headers(200, "application/zip", extra={"Content-Disposition": attachment(f"{folder.name}.zip"),
                                                     "Connection": "close"})
        self.close_connection = True
        if self.command == "HEAD":
            return
        stream = io.BufferedWriter(self.wfile, 1 << 16)
        write_zip(folder, stream)
        stream.flush()


_JOB = r"/api/jobs/([0-9a-f]{16})"
ROUTES = {
    "GET": [
        (r"/api/config", StudioHandler.config),
        (r"/api/list", StudioHandler.listing),
        (r"/api/classes", StudioHandler.classes),
        (r"/api/suggest", StudioHandler.suggest),
        (_JOB + r"/events", StudioHandler.events),
        (_JOB + r"/model/([A-Za-z0-9._-]+)", StudioHandler.model_file),
        (_JOB + r"/download\.zip", StudioHandler.download),
        (r"/troubleshooting", StudioHandler.troubleshooting),
        (r"/((?:vendor/)?[A-Za-z0-9._-]*)", StudioHandler.static),
    ],
    "POST": [
        (r"/api/upload", StudioHandler.upload),
        (r"/api/inspect", StudioHandler.inspect),
        (r"/api/convert", StudioHandler.convert),
        (_JOB + r"/cancel", StudioHandler.cancel),
        (_JOB + r"/verify", StudioHandler.verify),
    ],
}
