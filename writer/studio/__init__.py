"""``python -m writer studio [ROOT] [--port N]``: convert checkpoints in a local web page.

Pick a checkpoint under ROOT (or drop one into the page), inspect its parameter tree and
layer graph, convert it with live status (stages, per-tensor progress, notices, coded
errors) streamed over Server-Sent Events, verify it against JAX in real TF.js, test it in
the browser itself, and download it as a zip. Same engine as the CLI; stdlib server on
127.0.0.1 only. Modules: :mod:`.paths` (ROOT confinement, uploads), :mod:`.jobs`
(background conversions), :mod:`.options` (form -> engine options), :mod:`.handler`
(routes), :mod:`.site` (static files), :mod:`.present` and :mod:`.page_hints` (paths relative
to ROOT, hints naming the page's controls), :mod:`.classes` (the classes of a model file).

Example:
    >>> server = make_server(Path("."), 0)
    >>> server.server_address[0]
    '127.0.0.1'
    >>> server.close()
"""
from __future__ import annotations

import argparse
import errno
import sys
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Sequence

from topology.vocabulary.errors import ConversionError
from writer.option_parser import OptionParser
from writer.studio.handler import StudioHandler
from writer.studio.jobs import Jobs
from writer.studio.paths import Root, Uploads
from writer.studio.present import Presenter
from writer.studio.site import STATIC_FILES, web_demo_dir

HOST = "127.0.0.1"
DEFAULT_PORT = 8100
DEFAULT_MAX_UPLOAD_MB = 512


class StudioServer(ThreadingHTTPServer):
    """The HTTP server plus the studio's state (ROOT, uploads, jobs)."""

    daemon_threads = True

    def __init__(self, root: Root, port: int, max_upload_bytes: int) -> None:
        super().__init__((HOST, port), StudioHandler)
        self.root = root
        self.uploads = Uploads(max_upload_bytes)
        self.jobs = Jobs()
        self.presenter = Presenter(self.root.path, self.uploads.folder)

    def close(self) -> None:
        """Cancel running conversions (their staging folders go), drop uploads, close the socket."""
        self.jobs.cancel_all()
        self.uploads.close()
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
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.close()
    return 0
