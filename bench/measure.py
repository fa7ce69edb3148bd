"""Run a command as a child process and measure its wall time and peak RSS; summarise repeats.

Peak RSS comes from the kernel: ``os.wait4`` returns the child's ``rusage`` whose ``ru_maxrss``
is the high-water mark of its resident set (in KiB on Linux). Nothing is sampled, so short
spikes are not missed and the measurement costs nothing.
"""
from __future__ import annotations

import os
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

MB = 1024 * 1024


@dataclass
class RunResult:
    """One child process: wall seconds, peak RSS bytes, CPU seconds, exit status and output.

    Example:
        >>> r = run(["true"]); r.ok, r.seconds >= 0
        (True, True)
    """

    seconds: float
    peak_rss: int
    returncode: int
    stdout: str = ""
    stderr: str = ""
    cpu_seconds: float = 0.0  # user + system

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# The launcher is a tiny interpreter (-S: no site-packages) that forks the measured command and
# waits for it. Measuring through it matters: on Linux a child's ru_maxrss starts from the RSS
# high-water mark of the process it was forked from (exec records the old mm's peak), so a
# command spawned straight from a benchmark process holding 400 MB would report >= 400 MB.
# Forked from the ~10 MB launcher, it reports its own peak. The launcher also takes the wall time
# from fork to exit, without its own start-up.
_LAUNCHER = """
import os, sys, time
result, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(result, "w") as handle:
    handle.write(repr((seconds, usage.ru_maxrss, os.waitstatus_to_exitcode(status),
                       usage.ru_utime + usage.ru_stime)))
"""


def run(cmd: Sequence[str], cwd: str | Path | None = None, env: dict | None = None,
        timeout: float | None = None) -> RunResult:
    """Run ``cmd`` to completion; wall time from fork to exit, peak RSS from ``wait4``.

    Output goes to temporary files, not pipes, so a chatty child never blocks on a full pipe
    and no reader thread competes with it for the two cores.

    Example:
        >>> r = run(["python", "-c", "b = bytearray(50 * 2**20)"])
        >>> r.peak_rss > 50 * MB
        True
    """
    import ast
    import signal
    import sys
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".result") as result:
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, result.name, *map(str, cmd)]
        # A session of its own, so a timeout kills the launcher and the command together.
        proc = subprocess.Popen(launcher, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        text = result.read()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
        if proc.returncode != 0 or not text:
            return RunResult(0.0, 0, proc.returncode or 127, stdout, stderr or "launcher failed")
        seconds, maxrss_kib, returncode, cpu = ast.literal_eval(text)
        return RunResult(seconds, maxrss_kib * 1024, returncode, stdout, stderr, cpu)


@dataclass
class Summary:
    """Median and spread of repeated measurements.

    ``low``/``high`` are the minimum and maximum for up to 10 values, else the 10th and 90th
    percentiles (latency samples); ``spread`` says which.

    Example:
        >>> s = summarize([3.0, 1.0, 2.0]); (s.median, s.low, s.high, s.n)
        (2.0, 1.0, 3.0, 3)
    """

    median: float
    low: float
    high: float
    n: int
    spread: str = "min-max"
    values: list[float] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        return {"median": self.median, "low": self.low, "high": self.high, "n": self.n,
                "spread": self.spread, "values": self.values}

    def fmt(self, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
        """``median (low–high)`` in the given unit.

        Example:
            >>> summarize([0.25, 0.26, 0.3]).fmt(1000, 0, " ms")
            '260 ms (250–300)'
        """
        f = lambda v: f"{v * scale:,.{digits}f}"  # noqa: E731
        return f"{f(self.median)}{unit} ({f(self.low)}–{f(self.high)})"


def summarize(values: Sequence[float]) -> Summary:
    """Median with min–max (n <= 10) or p10–p90 (n > 10).

    Example:
        >>> summarize(list(range(101))).spread
        'p10-p90'
    """
    vals = sorted(float(v) for v in values)
    if not vals:
        raise ValueError("no values to summarise")
    if len(vals) <= 10:
        return Summary(statistics.median(vals), vals[0], vals[-1], len(vals), "min-max", vals)
    q = statistics.quantiles(vals, n=10, method="inclusive")
    return Summary(statistics.median(vals), q[0], q[-1], len(vals), "p10-p90", vals)


def summary_from_json(data: dict) -> Summary:
    """Rebuild a :class:`Summary` from :meth:`Summary.to_json`.

    Example:
        >>> summary_from_json(summarize([1.0, 2.0]).to_json()).median
        1.5
    """
    return Summary(data["median"], data["low"], data["high"], data["n"], data.get("spread", "min-max"),
                   list(data.get("values", [])))
