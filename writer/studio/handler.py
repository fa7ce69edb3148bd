"""HTTP routes of the studio: static page, JSON API, Server-Sent Events, model files and zip.

Every response carries ``X-Content-Type-Options: nosniff`` and a Content-Security-Policy;
requests whose Host is not 127.0.0.1/localhost (DNS rebinding) or whose Origin is another
site (cross-site POSTs) are refused; there is no directory listing anywhere.
"""
from __future__ import annotations

import io
import json
import re
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from topology.infer import POOL_CHOICES, TEMPLATE_ACTIVATIONS
from topology.vocabulary.errors import ConversionError
from writer.convert import ConvertOptions
from writer.flags import default_of
from writer.inspect_tree import inspect_checkpoint
from writer.presets import PRESETS
from writer.studio import site
from writer.studio.classes import file_classes
from writer.studio.jobs import error_event
from writer.studio.options import convert_options, verify_options
from writer.studio.paths import UPLOAD_PREFIX
from writer.verify import verify

CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self' blob: data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
MAX_JSON = 1 << 20
STATUS = {"PATH_OUTSIDE_ROOT": 403, "HOST_REFUSED": 403, "NOT_FOUND": 404, "JOB_NOT_FOUND": 404,
          "OUTPUT_BUSY": 409, "UPLOAD_TOO_LARGE": 413, "INTERNAL": 500}


class StudioHandler(BaseHTTPRequestHandler):
    """Routes; the server object carries ``root``, ``uploads``, ``jobs`` and ``port``."""

    server_version = "flax2tfjs-studio"

    # ---------- plumbing ----------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _headers(self, status: int, content_type: str, length: int | None = None, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self._headers(status, content_type, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(self.server.presenter.for_page(value)).encode(), "application/json")

    def _error(self, err: ConversionError) -> None:
        self._json({"error": error_event(err)}, STATUS.get(err.code, 400))

    def _allowed(self) -> bool:
        port = self.server.server_address[1]
        hosts = {f"{h}:{port}" for h in ("127.0.0.1", "localhost")} | {"127.0.0.1", "localhost"}
        if self.headers.get("Host", "") not in hosts:
            return False
        origin = self.headers.get("Origin")
        return origin is None or origin in {f"http://{h}" for h in hosts}

    def _route(self, method: str) -> None:
        if not self._allowed():
            self._error(ConversionError("HOST_REFUSED", "this studio answers only http://127.0.0.1 and "
                                        "http://localhost on its own port", "open the URL the studio printed"))
            return
        path = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(path.query))
        try:
            for pattern, handler in ROUTES[method]:
                match = re.fullmatch(pattern, path.path)
                if match:
                    handler(self, query, *match.groups())
                    return
            self._not_found()
        except ConversionError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the page went away
        except Exception as exc:  # a fault of the studio: a coded answer, never a dropped connection
            self._error(ConversionError("INTERNAL", f"{type(exc).__name__}: {exc}",
                                        "this is a bug in flax2tfjs; report it with what you clicked"))

    def _not_found(self) -> None:
        self._error(ConversionError("NOT_FOUND", f"nothing at {urllib.parse.urlsplit(self.path).path}", "open /"))

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def _length(self) -> int | None:
        text = self.headers.get("Content-Length")
        if text is None:
            return None
        if not text.isdigit():
            raise ConversionError("BAD_OPTION", f"Content-Length {text!r}", "send a byte count")
        return int(text)

    def _body(self) -> dict:
        length = self._length() or 0
        if length > MAX_JSON or "application/json" not in self.headers.get("Content-Type", ""):
            raise ConversionError("BAD_OPTION", "the request is not a JSON object of at most 1 MiB", "use the page")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ConversionError("BAD_OPTION", "the request is not a JSON object", "use the page")
        return body

    def _checkpoint(self, text: Any) -> Path:
        if isinstance(text, str) and text.startswith(UPLOAD_PREFIX):
            return self.server.uploads.resolve(text)
        return self.server.root.resolve(text if isinstance(text, str) else "", must_exist=True)

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
                    "max_upload_bytes": self.server.uploads.limit,
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
        out = str(body.get("out") or "").strip()
        if not out or out in (".", "./"):
            raise ConversionError("BAD_OPTION", "no output folder given", "name a new folder, e.g. mnist_tfjs")
        out_dir = self.server.root.resolve(out)
        if out_dir == self.server.root.path or out_dir in checkpoint.parents or out_dir == checkpoint:
            raise ConversionError("BAD_OPTION", f"{out} would overwrite the studio folder or the checkpoint",
                                  "name a new folder")
        job = self.server.jobs.start(checkpoint, out_dir, convert_options(body, self.server.root), body)
        self._json({"job": job.id, "out": self.server.root.relative(out_dir)})

    def events(self, query: dict, job_id: str) -> None:
        job = self.server.jobs.get(job_id)
        last = self.headers.get("Last-Event-ID", "")
        start = int(last) + 1 if last.isdigit() else 0  # a reconnecting EventSource resumes after the last one
        self._headers(200, "text/event-stream", extra={"Connection": "close"})
        try:
            for event in job.follow(start):
                if event is None:
                    self.wfile.write(b": keepalive\n\n")
                else:
                    shown = self.server.presenter.for_page(event)  # paths relative to ROOT, page hints
                    self.wfile.write(f"id: {event['seq']}\ndata: {json.dumps(shown)}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away; the job goes on
        self.close_connection = True

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

    def model_file(self, query: dict, job_id: str, name: str) -> None:
        job = self._done_job(job_id)
        file = job.out_dir / name
        if name.startswith(".") or not file.is_file() or file.parent != job.out_dir:
            return self._not_found()
        kind = "application/json" if name.endswith(".json") else "application/octet-stream"
        self._send(200, file.read_bytes(), kind)

    def download(self, query: dict, job_id: str) -> None:
        job = self._done_job(job_id)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(job.out_dir.iterdir()):
                if file.is_file():  # fixed timestamps: the same model gives the same zip
                    info = zipfile.ZipInfo(f"{job.out_dir.name}/{file.name}", (1980, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, file.read_bytes())
        self._send(200, buffer.getvalue(), "application/zip",
                   {"Content-Disposition": f'attachment; filename="{job.out_dir.name}.zip"'})


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
