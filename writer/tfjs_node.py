"""Run converted models in real TensorFlow.js (Node) from Python.

:class:`TfjsRunner` starts ``node js/tfjs_runner.mjs`` once and talks to it in JSON lines,
so loading @tensorflow/tfjs (about a second) is paid once per session, not per model. Each
request re-reads model.json and its shards from disk, exactly as a browser would load them.

Example:
    >>> with TfjsRunner() as tfjs:                                  # doctest: +SKIP
    ...     res = tfjs.predict("out/", np.zeros((1, 784), np.float32), backend="wasm")
    ...     res.outputs[0].shape, res.load_ms, res.predict_ms
    ((1, 10), 6.2, [1.4])

Needs ``node`` (>= 18) on PATH, nothing else: TF.js 4.22 comes from ``node_modules`` in a
checkout after ``npm ci`` (what the tests use), else from the browser build that the package
ships for the web demo (``web_demo/vendor``), which the runner evaluates in Node. Both give
the same predictions (tests/test_tfjs_bundle.py). ``FLAX2TFJS_TFJS=npm|bundle|auto`` or
``TfjsRunner(tfjs=...)`` chooses. Only numpy and the standard library are imported here.
"""
from __future__ import annotations

import base64
import collections
import functools
import json
import os
import queue
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from topology.vocabulary.errors import ConversionError

from writer import resources

_TFJS_SOURCES = ("auto", "npm", "bundle")
BACKENDS = ("wasm", "cpu")  # TF.js backends in Node: wasm (fast), cpu (plain JavaScript)
_NODE_HINT = ("install Node.js 18 or newer (https://nodejs.org, `apt-get install nodejs`, `brew install node` "
              "or `winget install OpenJS.NodeJS`) and make sure `node` is on PATH")
_WIRE_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "bool": np.dtype("bool")}


class TfjsError(Exception):
    """TF.js refused a request; ``message`` is tfjs's own text.

    Example:
        >>> str(TfjsError("Unknown layer: Foo. ..."))
        'Unknown layer: Foo. ...'
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TfjsTimeoutError(TfjsError):
    """A request took longer than the timeout; the Node process was killed and will restart.

    Example:
        >>> isinstance(TfjsTimeoutError("timed out"), TfjsError)
        True
    """


@dataclass
class PredictResult:
    """What one ``predict`` request returned.

    Example:
        >>> r = PredictResult([np.zeros(2)], 3.5, [0.4, 0.2], "cpu")
        >>> r.output.shape, min(r.predict_ms)
        ((2,), 0.2)
    """

    outputs: list[np.ndarray]
    load_ms: float
    predict_ms: list[float] = field(default_factory=list)
    backend: str = "cpu"

    @property
    def output(self) -> np.ndarray:
        """The only output of a single-output model (first output otherwise)."""
        return self.outputs[0]


def _model_json(model_dir: str | os.PathLike) -> str:
    """Accept a directory holding model.json or the model.json path itself."""
    p = Path(model_dir).resolve()
    if p.is_dir():
        p = p / "model.json"
    return str(p)


def _encode(x: Any, index: int) -> dict:
    """numpy array -> wire tensor; floats travel as float32, integers and bools as int32."""
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        arr = arr.astype("<f4", copy=False)
        dtype = "float32"
    elif arr.dtype.kind in "iub":
        if arr.dtype.kind in "iu" and arr.size and (arr.min() < -(2**31) or arr.max() >= 2**31):
            raise ValueError(f"inputs[{index}]: integer values outside the int32 range")
        arr = arr.astype("<i4", copy=False)
        dtype = "int32"
    else:
        raise TypeError(f"inputs[{index}]: dtype {arr.dtype} cannot be fed to tfjs (float or int)")
    arr = np.ascontiguousarray(arr)
    return {
        "shape": list(arr.shape),
        "dtype": dtype,
        "data": base64.b64encode(arr.tobytes()).decode("ascii"),
    }


def _decode(spec: dict) -> np.ndarray:
    dtype = _WIRE_DTYPES.get(spec["dtype"])
    if dtype is None:
        raise TfjsError(f"tfjs returned an output of unsupported dtype {spec['dtype']}")
    raw = bytearray(base64.b64decode(spec["data"]))  # bytearray -> writable array
    return np.frombuffer(raw, dtype=dtype).reshape(spec["shape"])


@functools.lru_cache(maxsize=None)
def _check_node_version(node: str) -> None:
    """``NODE_TOO_OLD`` below Node 18 (the runner's syntax and TF.js 4.22 need it)."""
    try:
        text = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        major = int(text.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        raise ConversionError("NODE_NOT_FOUND", f"{node} --version did not answer like Node.js", _NODE_HINT) from None
    if major < 18:
        raise ConversionError("NODE_TOO_OLD", f"{node} is Node.js {text}; TensorFlow.js 4.22 here needs Node.js >= 18",
                              _NODE_HINT)


def _check_node_modules() -> None:
    """``TFJS_NOT_INSTALLED`` when npm mode is forced but the checkout has no ``npm ci``."""
    checkout = resources.checkout_root()
    missing = [p for p in ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm")
               if checkout is None or not (checkout / "node_modules" / p / "package.json").is_file()]
    if missing:
        where = checkout / "node_modules" if checkout is not None else "this installation (not a checkout)"
        raise ConversionError("TFJS_NOT_INSTALLED", f"{', '.join(missing)} not found in {where}",
                              "run `npm ci` in the checkout, or use the packaged TF.js: FLAX2TFJS_TFJS=bundle")


class TfjsRunner:
    """A long-lived Node process running @tensorflow/tfjs 4.22; use as a context manager.

    ``timeout`` (seconds) bounds every request: on expiry the process is killed, a
    :class:`TfjsTimeoutError` is raised and the next request starts a fresh process.
    A request tfjs rejects raises :class:`TfjsError`; the process keeps serving.

    Example:
        >>> with TfjsRunner(timeout=60) as tfjs:                    # doctest: +SKIP
        ...     tfjs.summary("out/")["metadata"]
        {'flax2tfjs': {...}}
    """

    def __init__(self, timeout: float = 120.0, node: str | None = None, tfjs: str | None = None) -> None:
        self.timeout = timeout
        self._node = node or shutil.which("node")
        if not self._node:
            raise ConversionError(
                "NODE_NOT_FOUND", "`node` is not on PATH; running models in TensorFlow.js needs Node.js >= 18",
                _NODE_HINT)
        self.tfjs = tfjs or os.environ.get("FLAX2TFJS_TFJS") or ("auto" if resources.IN_CHECKOUT else "bundle")
        if self.tfjs not in _TFJS_SOURCES:
            raise ConversionError("BAD_OPTION", f"TF.js source {self.tfjs!r} (FLAX2TFJS_TFJS)",
                                  "use auto, npm (node_modules of a checkout) or bundle (the packaged browser build)")
        _check_node_version(self._node)
        if self.tfjs == "npm":
            _check_node_modules()
        # Resolved now, so a broken installation fails before anything runs.
        self._runner_js = resources.resource_path("js", "tfjs_runner.mjs")
        self._bundle = resources.resource_path("web_demo", "vendor")
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=50)
        self._next_id = 0
        self._lock = threading.Lock()

    # -- process lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the Node process if it is not running (requests do this on demand)."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._lines = queue.Queue()  # a fresh queue: nothing stale from a killed process
        self._proc = subprocess.Popen(
            [self._node, str(self._runner_js), "--tfjs", self.tfjs, "--bundle", str(self._bundle)],
            cwd=str(self._runner_js.parent),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        # Reader threads so a full pipe never blocks Node, and reads can time out.
        threading.Thread(target=self._pump, args=(self._proc.stdout, self._lines),
                         daemon=True).start()
        threading.Thread(target=self._pump_stderr, args=(self._proc.stderr,), daemon=True).start()

    @staticmethod
    def _pump(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)  # EOF: the process exited

    def _pump_stderr(self, stream) -> None:
        for line in stream:
            self._stderr.append(line.rstrip("\n"))

    def close(self) -> None:
        """Stop the Node process (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.stdin.close()  # the runner exits when stdin closes
                proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    @property
    def pid(self) -> int | None:
        """Process id of the running Node process (``None`` when not running).

        Example:
            >>> with TfjsRunner() as tfjs:                          # doctest: +SKIP
            ...     isinstance(tfjs.pid, int)
            True
        """
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def __enter__(self) -> "TfjsRunner":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; prefer `with` or close()
        try:
            self._kill()
        except Exception:
            pass

    # -- requests ----------------------------------------------------------------------

    def request(self, payload: dict, timeout: float | None = None) -> dict:
        """Send one raw request and return the runner's response (``ok`` is true).

        Example:
            >>> TfjsRunner().request({"cmd": "version"})["tfjs"]     # doctest: +SKIP
            '4.22.0'
        """
        timeout = self.timeout if timeout is None else timeout
        with self._lock:
            self.start()
            self._next_id += 1
            rid = self._next_id
            line = json.dumps({**payload, "id": rid}) + "\n"
            try:
                self._proc.stdin.write(line)
                self._proc.stdin.flush()
            except OSError:
                self._kill()
                raise TfjsError(self._died_message()) from None
            while True:
                try:
                    out = self._lines.get(timeout=timeout)
                except queue.Empty:
                    self._kill()
                    raise TfjsTimeoutError(
                        f"tfjs did not answer {payload.get('cmd')} for "
                        f"{payload.get('model', '')} within {timeout:g} s; the runner was "
                        "restarted") from None
                if out is None:
                    self._kill()
                    raise TfjsError(self._died_message())
                try:
                    resp = json.loads(out)
                except json.JSONDecodeError:
                    self._stderr.append(out.rstrip("\n"))  # stray output, not a response
                    continue
                if resp.get("id") != rid:
                    continue  # not ours (cannot happen with one process per lock holder)
                break
        if not resp.get("ok"):
            raise TfjsError(str(resp.get("error", "unknown tfjs error")))
        return resp

    def _died_message(self) -> str:
        code = self._proc.poll() if self._proc is not None else None
        tail = "\n".join(list(self._stderr)[-10:])
        return f"tfjs runner exited unexpectedly (exit status {code}); stderr:\n{tail}"

    def predict(
        self,
        model_dir: str | os.PathLike,
        inputs: Sequence[np.ndarray] | np.ndarray,
        backend: str = "cpu",
        repeat: int = 1,
        timeout: float | None = None,
    ) -> PredictResult:
        """Load ``model_dir/model.json`` in tfjs and run ``model.predict`` ``repeat`` times.

        ``inputs`` is one array (single-input model) or a list in ``model.inputs`` order;
        floats are sent as float32, integers as int32. ``backend`` is ``"cpu"`` or ``"wasm"``.

        Example:
            >>> with TfjsRunner() as tfjs:                          # doctest: +SKIP
            ...     tfjs.predict("out/", [a, b], backend="wasm").outputs
            [array([[0.1, 0.9]], dtype=float32)]
        """
        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        resp = self.request(
            {
                "cmd": "predict",
                "model": _model_json(model_dir),
                "inputs": [_encode(x, i) for i, x in enumerate(arrays)],
                "backend": backend,
                "repeat": int(repeat),
            },
            timeout,
        )
        return PredictResult(
            outputs=[_decode(o) for o in resp["outputs"]],
            load_ms=float(resp["load_ms"]),
            predict_ms=[float(t) for t in resp["predict_ms"]],
            backend=resp["backend"],
        )

    def summary(self, model_dir: str | os.PathLike, timeout: float | None = None) -> dict:
        """Load the model in tfjs and describe it.

        Returns ``{"name", "class", "layers": [{"name", "class", "output_shape", "params"}],
        "inputs"/"outputs": [{"name", "shape", "dtype"}], "weights": [{"name", "shape",
        "dtype"}], "params", "metadata", "userDefinedMetadata"}`` where ``metadata`` and its
        alias ``userDefinedMetadata`` are ``model.getUserDefinedMetadata()`` (``None`` when
        absent).

        Example:
            >>> with TfjsRunner() as tfjs:                          # doctest: +SKIP
            ...     [l["class"] for l in tfjs.summary("out/")["layers"]]
            ['InputLayer', 'Dense', 'Dense']
        """
        resp = self.request({"cmd": "summary", "model": _model_json(model_dir)}, timeout)
        return resp["summary"]

    def source(self) -> str:
        """Where the runner's TF.js came from: ``"npm"`` (node_modules) or ``"bundle"`` (web_demo/vendor).

        Example:
            >>> TfjsRunner(tfjs="bundle").source()                  # doctest: +SKIP
            'bundle'
        """
        return self.request({"cmd": "version"})["source"]

    def version(self) -> str:
        """The @tensorflow/tfjs version the runner loaded.

        Example:
            >>> TfjsRunner().version()                               # doctest: +SKIP
            '4.22.0'
        """
        return self.request({"cmd": "version"})["tfjs"]
