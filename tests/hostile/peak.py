"""Run a command as a child process and measure its peak RSS (``os.wait4``: this child only).

``python -m tests.hostile.peak CMD...`` prints the exit code and the peak RSS in MiB.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes
    cpu_seconds: float = 0.0  # user + system time of the child
    wall_seconds: float = 0.0

    @property
    def error_code(self) -> str | None:
        for line in self.stderr.splitlines():
            if line.startswith("error[") and "]" in line:
                return line[len("error["):line.index("]")]
        return None


# The measured command runs as a grandchild: a fresh, small launcher starts it and reads its
# rusage with wait4. Forked straight from pytest, the child would inherit pytest's peak RSS (Linux
# keeps the larger of the pre-exec and post-exec high-water marks): 775 MiB after in-process JAX
# tests, whatever the command itself used.
_LAUNCHER = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as report:
    json.dump({"returncode": child.returncode, "maxrss": usage.ru_maxrss,
               "cpu": usage.ru_utime + usage.ru_stime}, report)
"""


def run(cmd: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: float = 120) -> Run:
    """Run ``cmd``; its own peak RSS and CPU time come from the kernel's accounting of that one process.

    ``env`` adds to the environment; a value of None removes that variable."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}  # None: leave that variable out
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "rusage.json"
        launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(report), *map(str, cmd)], cwd=cwd, env=env,
                                    stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            launcher.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and the command
            launcher.wait()
            raise TimeoutError(f"{cmd[:4]} still running after {timeout} s") from None
        measured = json.loads(report.read_text())
        out.seek(0)
        err.seek(0)
        return Run(measured["returncode"], out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                   measured["maxrss"] * 1024, measured["cpu"], time.monotonic() - started)


def writer_cli(*args: object, cwd: Path | None = None, code_root: Path = ROOT, timeout: float = 120) -> Run:
    """``python -m writer ARGS`` with the writer package of ``code_root``."""
    return run([sys.executable, "-m", "writer", *map(str, args)], cwd=cwd or code_root, env={"PYTHONPATH": str(code_root)},
               timeout=timeout)


if __name__ == "__main__":
    result = run(sys.argv[1:], cwd=Path.cwd(), timeout=3600)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    print(f"exit {result.returncode}, peak RSS {result.peak_rss / 2**20:.0f} MiB, {result.cpu_seconds:.2f} s CPU, "
          f"{result.wall_seconds:.2f} s wall", file=sys.stderr)
