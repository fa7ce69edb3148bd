"""``python -m writer studio [ROOT] [--port N]``: convert checkpoints in a local web page.

Pick a checkpoint under ROOT (or drop one into the page), inspect its parameter tree and
layer graph, convert it with live status (stages, per-tensor progress, notices, coded
errors) streamed over Server-Sent Events, verify it against JAX in real TF.js, test it in
the browser itself, and download it as a zip. Same engine as the CLI; stdlib server on
127.0.0.1 only. Modules: :mod:`.paths` (ROOT confinement, uploads), :mod:`.jobs`
(background conversions), :mod:`.options` (form -> engine options), :mod:`.handler`
(routes), :mod:`.request_rules` (what a request may hold), :mod:`.connections` (the
connection cap), :mod:`.model_files` (what of an output folder is served), :mod:`.archive`
(the streamed zip), :mod:`.site` (static files), :mod:`.present` and :mod:`.page_hints` (paths
relative to ROOT, hints naming the page's controls), :mod:`.classes` (the classes of a model file). The security model is in docs/studio.md.

Example:
    >>> server = make_server(Path("."), 0)
    >>> server.server_address[0]
    '127.0.0.1'
    >>> server.close()
"""
from __future__ import annotations

import argparse
import errno
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

from topology.vocabulary.errors import ConversionError
from writer.option_parser import OptionParser
from writer.commands.studio.connections import ConnectionGate
from writer.commands.studio.handler import StudioHandler, error_body
from writer.commands.studio.jobs import Jobs
from writer.commands.studio.paths import Root, Uploads
from writer.commands.studio.present import Presenter
from writer.commands.studio.site import STATIC_FILES, web_demo_dir

HOST = "127.0.0.1"
DEFAULT_PORT = 8100
DEFAULT_MAX_UPLOAD_MB = 512
MAX_CONNECTIONS = 64  # the page needs a handful; stalled connections give way to new ones
HEADER_SECONDS = 10.0  # a connection that has not sent its request head by then may be dropped
CANCEL_WAIT_SECONDS = 10.0  # on exit, how long running conversions get to remove their staging folders


class Stopped(Exception):
    """SIGTERM or SIGHUP: stop serving and clean up, as Ctrl+C does."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped()


class StudioServer(ThreadingHTTPServer):
    """The HTTP server plus the studio's state (ROOT, uploads, jobs, connection cap, token).

    Everything the studio keeps besides the outputs it writes into ROOT lives in one temporary
    folder (``state``), removed by :meth:`close`.
    """

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, root: Root, port: int, max_upload_bytes: int) -> None:
        super().__init__((HOST, port), StudioHandler)
        self.root = root
        self.token = secrets.token_urlsafe(32)  # per launch; the page reads it from /api/config
        self.gate = ConnectionGate(MAX_CONNECTIONS, HEADER_SECONDS)
        self.state = Path(tempfile.mkdtemp(prefix="flax2tfjs-studio-"))
        self.jobs = Jobs()
        self.uploads = Uploads(max_upload_bytes, self.state / "uploads", in_use=self.jobs.checkpoints_in_use)
        self.presenter = Presenter(self.root.path, self.uploads.folder)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if self.gate.admit(request):
            super().process_request(request, client_address)
            return
        try:  # every slot serves a request: say so at once rather than leave the caller hanging
            request.settimeout(1.0)
            body = error_body(ConversionError("SERVER_BUSY", f"the studio already serves {MAX_CONNECTIONS} "
                                              "connections", "retry in a moment"))
            request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        self.shutdown_request(request)

    def shutdown_request(self, request: socket.socket) -> None:
        self.gate.leave(request)
        super().shutdown_request(request)

    def close(self) -> None:
        """Cancel running conversions (their staging folders go), remove the state folder, close the socket."""
        self.jobs.cancel_all(wait=CANCEL_WAIT_SECONDS)
        self.uploads.close()
        shutil.rmtree(self.state, ignore_errors=True)
        self.server_close()


def make_server(root: Path, port: int, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB << 20) -> StudioServer:
    """A ready (not yet serving) studio for ``root`` on 127.0.0.1:``port`` (0 = any free port).

    Raises ``STUDIO_ROOT_NOT_FOUND``, ``DEMO_FILES_MISSING`` or ``PORT_UNAVAILABLE``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConversionError("STUDIO_ROOT_NOT_FOUND", f"{root} is not a folder",
                              "give the folder that holds your checkpoints, e.g. python -m writer studio .")
    site = web_demo_dir()
    missing = [n for n in (*STATIC_FILES, "vendor/tf.es2017.min.js") if not (site / n).is_file()]
    if missing:
        raise ConversionError("DEMO_FILES_MISSING", f"the studio's page files in {site} lack {', '.join(missing)}",
                              "run the command from a full checkout of flax2tfjs")
    try:
        return StudioServer(Root(root), port, max_upload_bytes)
    except OverflowError:
        raise ConversionError("BAD_OPTION", f"--port {port} is not a port number", "use 1..65535, or 0 for any free port") from None
    except OSError as exc:
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror})"
        raise ConversionError("PORT_UNAVAILABLE", f"port {port} on {HOST} {reason}",
                              "choose another with --port N, or --port 0 to take any free port") from None


def build_parser(prog: str = "python -m writer studio") -> argparse.ArgumentParser:
    """Arguments of the studio command.

    Example:
        >>> build_parser().parse_args(["ckpts", "--port", "0"]).port
        0
    """
    parser = OptionParser(prog=prog, description="A local web app to pick, inspect, convert, verify and test the "
                     "checkpoints under ROOT, with live conversion status. Serves 127.0.0.1 only.")
    parser.add_argument("root", nargs="?", type=Path, default=Path("."),
                        help="the folder to browse; nothing outside it is listed, read or written (default: .)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 = any free port")
    parser.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest checkpoint accepted by drag and drop (default {DEFAULT_MAX_UPLOAD_MB})")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m writer studio") -> int:
    """Run the studio until Ctrl+C; errors print ``error[CODE]`` and return 2.

    Example:
        >>> main(["/nonexistent"])   # doctest: +SKIP
        2
    """
    try:
        args = build_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
        server = make_server(args.root, args.port, max(1, args.max_upload_mb) << 20)
    except ConversionError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_status
    print(f"flax2tfjs studio for {server.root.path}\n  open http://{HOST}:{server.server_address[1]}/\n"
          "press Ctrl+C to stop", flush=True)
    # A service manager's stop (SIGTERM) or a closed terminal (SIGHUP) cleans up like Ctrl+C.
    stops = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    in_main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = {sig: signal.signal(sig, _stop) for sig in stops} if in_main else {}
    try:
        server.serve_forever()
    except (KeyboardInterrupt, Stopped):
        print("stopped", flush=True)
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
