"""Run a command as a child process and measure its peak RSS (``os.wait4``: this child only).

``python -m tests.hostile.peak CMD...`` prints the exit code and the peak RSS in MiB.
"""
from __future__ import annotations

import os
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


def run(cmd: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: float = 120) -> Run:
    """Run ``cmd``; its own peak RSS comes from the kernel's accounting of this one child.

    ``env`` adds to the environment; a value of None removes that variable."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}  # None: leave that variable out
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        try:
            _, status, usage = _wait4(child.pid, timeout)
        except TimeoutError:
            child.kill()
            os.waitpid(child.pid, 0)
            raise
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(child.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                   usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, time.monotonic() - started)


def _wait4(pid: int, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return done, status, usage
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} still running after {timeout} s")
        time.sleep(0.02)


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
