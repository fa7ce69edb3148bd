"""Progress bars and colours: drawn on a terminal only, checked on a real pseudo-terminal's final screen."""
from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import numpy as np

from tests.conftest import ROOT
from writer.progress import ProgressBar

MNIST = ROOT / "examples" / "mnist_ckpt"
COLUMNS, ROWS = 110, 60


def run_in_terminal(args: list[str], env: dict | None = None, timeout: float = 300) -> tuple[int, bytes]:
    """Run ``python -m writer ARGS`` with stdin/stdout/stderr on a new pseudo-terminal; return (status, bytes)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    full_env = {**os.environ, "TERM": "xterm", "COLUMNS": str(COLUMNS), "LINES": str(ROWS), **(env or {})}
    full_env.pop("NO_COLOR", None) if "NO_COLOR" not in (env or {}) else None
    proc = subprocess.Popen([sys.executable, "-m", "writer", *args], cwd=ROOT, stdin=slave, stdout=slave,
                            stderr=slave, env=full_env, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
        assert time.monotonic() < deadline, "timed out"
    os.close(master)
    return proc.wait(timeout=30), b"".join(chunks)


def screen(raw: bytes) -> list[str]:
    """The final screen a terminal shows for ``raw``: handles CR, LF, erase-line and colour codes."""
    lines, row, col = [""], 0, 0
    text = raw.decode("utf-8", "replace")
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            match = re.match(r"\x1b\[([0-9;?]*)([A-Za-z])", text[i:])
            if match:
                if match.group(2) == "K":  # erase to the end of the line
                    lines[row] = lines[row][:col]
                i += match.end()
                continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            col = 0  # the pty turns \n into \r\n
            if row == len(lines):
                lines.append("")
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1:]
            col += 1
        i += 1
    return [line.rstrip() for line in lines]


def test_convert_shows_a_progress_bar_that_ends_complete(tmp_path):
    status, raw = run_in_terminal([str(MNIST), str(tmp_path / "out")])
    assert status == 0, raw.decode(errors="replace")
    final = screen(raw)
    bars = [line for line in final if line.startswith("writing weights [")]
    assert len(bars) == 1, final  # redrawn in place: one line on the final screen
    document = json.loads((tmp_path / "out" / "model.json").read_text())
    tensors = len(document["weightsManifest"][0]["weights"])
    size = sum(int(np.prod(w["shape"])) * 4 for w in document["weightsManifest"][0]["weights"])
    from writer.term import human_bytes

    assert bars[0] == (f"writing weights [{'#' * 30}] 100%  {tensors}/{tensors} tensors  "
                       f"{human_bytes(size)}/{human_bytes(size)}")
    assert b"\r\x1b[K" in raw  # drawn with carriage returns, not one line per update
    assert final.index(bars[0]) < next(i for i, line in enumerate(final) if line.startswith("converted "))
    assert any(line.startswith("done in ") for line in final)
    assert b"reading the checkpoint ..." in raw  # the stage line before the first tensor, overdrawn by the bar


def test_module_conversion_shows_its_stages_while_jax_imports_and_traces(tmp_path):
    status, raw = run_in_terminal([str(MNIST), str(tmp_path / "out"), "--module", "examples/train_mnist.py:CNN",
                                   "--input-shape", "28,28,1"])
    assert status == 0, raw.decode(errors="replace")
    for stage in (b"importing JAX and the model code ...", b"tracing the model with JAX ..."):
        assert stage in raw
    final = screen(raw)
    assert not any(line.endswith(" ...") for line in final), final  # each stage line is overdrawn, none left


def test_quiet_prints_nothing_on_a_terminal(tmp_path):
    status, raw = run_in_terminal([str(MNIST), str(tmp_path / "out"), "--quiet"])
    assert status == 0 and raw == b""
    assert (tmp_path / "out" / "model.json").is_file()


def test_verify_on_a_terminal_has_bars_and_colours(tmp_path):
    assert subprocess.run([sys.executable, "-m", "writer", str(MNIST), str(tmp_path / "out")], cwd=ROOT,
                          capture_output=True, timeout=120).returncode == 0
    status, raw = run_in_terminal(["verify", str(tmp_path / "out"), str(MNIST), "--samples", "300",
                                   "--batch-size", "100"])
    assert status == 0, raw.decode(errors="replace")
    final = screen(raw)
    assert f"JAX reference [{'#' * 30}] 100%  300/300 samples" in final
    assert f"TF.js wasm [{'#' * 30}] 100%  300/300 samples" in final
    assert "\x1b[32;1mPASS\x1b[0m" in raw.decode()  # green on a colour terminal
    assert final[-1].startswith("PASS in ") or final[-2].startswith("PASS in ")
    status, raw = run_in_terminal(["verify", str(tmp_path / "out"), str(MNIST), "--samples", "8"],
                                  env={"NO_COLOR": "1"})
    assert status == 0 and b"\x1b[32" not in raw and b"PASS in" in raw


def test_inspect_on_a_terminal_dims_ignored_subtrees(tmp_path):
    from tests import flax_models as fm

    params = fm.init(fm.MLP((8, 3)), (4,))["params"]
    checkpoint = fm.save_msgpack({"params": params, "opt_state": {"mu": params, "nu": params}}, tmp_path / "s.msgpack")
    status, raw = run_in_terminal(["inspect", str(checkpoint)])
    assert status == 0
    text = raw.decode()
    assert re.search(r"\x1b\[2m  opt_state +\(8 tensors, ignored\)", text)  # dim
    assert "\x1b[1mcheckpoint\x1b[0m" in text  # bold headings


def test_progress_bar_redraws_in_place_and_is_throttled():
    out = io.StringIO()
    bar = ProgressBar("writing", total=1000, total_bytes=4000, stream=out, enabled=True, width=80)
    with bar:
        for i in range(1000):
            bar(f"layer_{i}/kernel", 4 * (i + 1))
    text = out.getvalue()
    draws = text.count("\r\x1b[K")
    assert 2 <= draws < 100  # first, throttled updates, final; not one per tensor
    assert re.search(r"\r\x1b\[Kwriting \[#+\] 100%  1000/1000 tensors  3\.9 KiB/3\.9 KiB\n$", text)
    assert "\r\x1b[Kwriting [....." in text  # the first draw, before any tensor


def test_progress_bar_estimates_grow_and_shrink_to_the_truth():
    out = io.StringIO()
    bar = ProgressBar("writing", total=2, total_bytes=8, stream=out, enabled=True, width=80)
    for i in range(3):  # one tensor more than estimated
        bar(f"w{i}", 4 * (i + 1))
        assert "100%" not in bar.render()  # reaching an estimate is not the end
    assert "99%  3/3 tensors" in bar.render()  # the estimate grows; never past 100 %
    bar.close()
    assert "100%  3/3 tensors  12 B/12 B" in bar.render()
    short = ProgressBar("writing", total=10, stream=io.StringIO(), enabled=True, width=80)
    short("w", 4)
    short.close()
    assert "1/1 tensors" in short.render()  # the final line states what was really written


def test_progress_bar_is_silent_off_a_terminal():
    out = io.StringIO()
    with ProgressBar("writing", total=3, stream=out) as bar:  # StringIO.isatty() is False
        bar("a", 4)
    assert out.getvalue() == ""
