"""The ``demo`` command: serve ``web_demo/`` on 127.0.0.1, optionally with another model.

``web_demo/`` is a static site (digit demo ``index.html`` and model tester ``tester.html``);
this module only adds a local server that maps ``/model/`` to the chosen model folder, so the
pages run your converted model without copying it anywhere.

    python -m writer demo                     # the bundled MNIST model, http://127.0.0.1:8000/
    python -m writer demo out/ --port 0       # your model, any free port
    python -m writer.demo out/                # the same (:mod:`writer.demo` starts this command)

Example:
    >>> server = make_server(None, 0)
    >>> server.server_address[0]
    '127.0.0.1'
    >>> server.server_close()
"""
from __future__ import annotations

import argparse
import errno
import functools
import posixpath
import sys
import urllib.parse
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Sequence

from topology.vocabulary.errors import ConversionError
from writer.option_parser import OptionParser
from writer.resources import resource_path
from writer.tfjs_files import UnsafeModelPath, model_file

HOST = "127.0.0.1"  # never exposed beyond this machine
DEFAULT_PORT = 8000
_ALLOWED_HOSTS = ("127.0.0.1", "localhost")
# What the pages need and no more: own scripts, WebAssembly (tfjs wasm backend), blob workers.
PAGE_CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
            "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# The tester also loads models from URLs and local files the user picks.
TESTER_CSP = PAGE_CSP.replace("connect-src 'self'", "connect-src 'self' http: https: blob: data:")


def _allowed_host(host: str | None, port: int) -> bool:
    """True for ``127.0.0.1`` / ``localhost``, bare or with this server's port.

    Example:
        >>> _allowed_host("localhost:8000", 8000), _allowed_host("evil.example:8000", 8000)
        (True, False)
    """
    if not host:
        return False
    name, _, given_port = host.strip().rpartition(":") if ":" in host else (host.strip(), "", "")
    return name.lower() in _ALLOWED_HOSTS and given_port in ("", str(port))


class DemoHandler(SimpleHTTPRequestHandler):
    """Static files of ``web_demo/``; ``/model/...`` comes from ``model_dir`` when one is given."""

    # The browser must fetch a fresh model.json after every conversion.
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".js": "text/javascript", ".json": "application/json"}

    def __init__(self, *args, model_dir: Path | None = None, **kwargs) -> None:
        self.model_dir = model_dir
        super().__init__(*args, **kwargs)

    # -- request hardening (issue 10) -------------------------------------------------

    def send_head(self):  # noqa: ANN201  (the parent's signature)
        """Refuse foreign Host headers (DNS rebinding) and malformed paths before touching files."""
        if not _allowed_host(self.headers.get("Host"), self.server.server_address[1]):
            self.send_error(HTTPStatus.MISDIRECTED_REQUEST, "this server answers only to 127.0.0.1 and localhost")
            return None
        try:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path, errors="strict")
        except (UnicodeDecodeError, ValueError):
            path = None
        if path is None or not path.startswith("/") or any(ord(c) < 32 or c == "\\" for c in path):
            self.send_error(HTTPStatus.BAD_REQUEST, "malformed path")
            return None
        try:
            return super().send_head()
        except (ValueError, OSError):  # e.g. names the file system refuses
            self.send_error(HTTPStatus.BAD_REQUEST, "malformed path")
            return None

    def list_directory(self, path):  # noqa: ANN001, ANN201
        self.send_error(HTTPStatus.NOT_FOUND, "no directory listings")
        return None

    def translate_path(self, path: str) -> str:
        route = posixpath.normpath(urllib.parse.unquote(urllib.parse.urlsplit(path).path))
        if self.model_dir is not None and (route == "/model" or route.startswith("/model/")):
            # The parent class drops '..' and drive parts; rebase its answer onto model_dir.
            inside = Path(super().translate_path(path)).relative_to(Path(self.directory) / "model")
            if inside == Path("."):
                return str(self.model_dir)
            try:  # the rule of verify: plain names, nothing reached through a symlink out, regular files
                return str(model_file(self.model_dir, inside.as_posix()))
            except UnsafeModelPath:
                return str(self.model_dir / ".refused-not-inside-the-model-folder")  # answered 404
        return super().translate_path(path)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        tester = urllib.parse.urlsplit(getattr(self, "path", "")).path.endswith("tester.html")
        self.send_header("Content-Security-Policy", TESTER_CSP if tester else PAGE_CSP)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the parent's signature)
        pass  # one line per request would drown the URL the user needs


def _check_model_dir(model_dir: Path) -> Path:
    model_dir = Path(model_dir).expanduser().resolve()
    if model_dir.is_file() and model_dir.name.endswith(".json"):
        model_dir = model_dir.parent  # accept the path of model.json itself
    if not (model_dir / "model.json").is_file():
        raise ConversionError(
            "DEMO_MODEL_NOT_FOUND",
            f"{model_dir} has no model.json",
            "give the output folder of a conversion, e.g. `python -m writer examples/mnist_ckpt out/` "
            "then `python -m writer demo out/`",
        )
    return model_dir


def make_server(model_dir: Path | None, port: int, site: Path | None = None) -> ThreadingHTTPServer:
    """A ready (not yet serving) HTTP server for ``site`` on 127.0.0.1:``port`` (0 = any free port).

    Raises ``ConversionError`` ``DEMO_MODEL_NOT_FOUND`` when ``model_dir`` has no
    ``model.json``, ``DEMO_FILES_MISSING`` when ``site`` is incomplete and
    ``PORT_UNAVAILABLE`` when the port cannot be opened.

    Example:
        >>> server = make_server(None, 0)
        >>> server.server_address[1] > 0
        True
        >>> server.server_close()
    """
    # Default: the packaged web_demo/ (importlib.resources; the checkout's folder in a clone).
    site = Path(site).resolve() if site is not None else resource_path("web_demo")
    checked = _check_model_dir(model_dir) if model_dir is not None else None
    needed = ["index.html", "tester.html", "common.js", "vendor/tf.es2017.min.js"]
    if checked is None:
        needed.append("model/model.json")
    missing = [name for name in needed if not (site / name).is_file()]
    if missing:
        raise ConversionError(
            "DEMO_FILES_MISSING",
            f"the web demo in {site} lacks {', '.join(missing)}",
            "reinstall the package (pip install --force-reinstall flax2tfjs); in a flax2tfjs checkout, "
            "`python scripts/build_demo.py` regenerates web_demo/model and web_demo/vendor",
        )
    handler = functools.partial(DemoHandler, directory=str(site), model_dir=checked)
    try:
        return ThreadingHTTPServer((HOST, port), handler)
    except OverflowError:
        raise ConversionError("BAD_OPTION", f"--port {port} is not a port number", "use 1..65535, or 0 for any free port") from None
    except OSError as exc:
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror})"
        raise ConversionError(
            "PORT_UNAVAILABLE",
            f"port {port} on {HOST} {reason}",
            "choose another with --port N, or --port 0 to take any free port",
        ) from None


def demo_urls(server: ThreadingHTTPServer) -> tuple[str, str]:
    """The demo and tester URLs of a server from :func:`make_server`.

    Example:
        >>> server = make_server(None, 0)
        >>> demo_urls(server)[1].endswith("/tester.html?model=model/model.json")
        True
        >>> server.server_close()
    """
    base = f"http://{HOST}:{server.server_address[1]}/"
    return base, base + "tester.html?model=model/model.json"


def serve_demo(model_dir: Path | None, port: int) -> None:
    """Serve the web demo with ``model_dir`` (default: the bundled MNIST model) until Ctrl+C.

    Prints the URLs first. Raises ``ConversionError`` for a missing model or a busy port.

    Example:
        >>> serve_demo(Path("out"), 8000)   # doctest: +SKIP
        serving the flax2tfjs web demo with /work/main/out
          demo:   http://127.0.0.1:8000/
          tester: http://127.0.0.1:8000/tester.html?model=model/model.json
        press Ctrl+C to stop
    """
    checked = _check_model_dir(model_dir) if model_dir is not None else None
    server = make_server(checked, port)
    demo, tester = demo_urls(server)
    model = checked or "the bundled MNIST model (web_demo/model)"
    print(f"serving the flax2tfjs web demo with {model}\n  demo:   {demo}\n  tester: {tester}\n"
          "press Ctrl+C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()


def build_parser(prog: str = "python -m writer demo") -> argparse.ArgumentParser:
    """Arguments of the demo command.

    Example:
        >>> build_parser().parse_args(["out", "--port", "0"]).port
        0
    """
    parser = OptionParser(prog=prog, description="Serve the web demo and model tester on 127.0.0.1.")
    parser.add_argument("model_dir", nargs="?", type=Path,
                        help="a converted model folder (default: the bundled MNIST model)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0 = any free port)")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m writer demo") -> int:
    """Run the demo command; return the exit status (errors print ``error[CODE]`` and return 2).

    Example:
        >>> main(["/nonexistent"])   # doctest: +SKIP
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(prog).parse_args(argv)
        serve_demo(args.model_dir, args.port)
    except ConversionError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_status
    return 0

