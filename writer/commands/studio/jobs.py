"""Conversions running in the background: their event logs, cancellation, one per output folder.

A job runs :func:`writer.convert.convert` in a thread and records every engine event
(:mod:`writer.events`) with a sequence number, so that any number of Server-Sent-Event
streams can replay and follow it. Cancelling makes the next event raise
:class:`Cancelled`; the engine then removes its staging folder, so nothing is left behind.

Example:
    >>> jobs = Jobs()
    >>> job = jobs.start(Path("/nonexistent/ck"), Path("/tmp/flax2tfjs-doc-out"), ConvertOptions())
    >>> job.wait(60); job.state, job.events[-1]["code"]
    ('error', 'CHECKPOINT_NOT_FOUND')
"""
from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path
from typing import Iterator

from writer.convert import ConvertOptions, convert
from topology.vocabulary.errors import ConversionError

FINAL = ("done", "error", "cancelled")
KEEP_FINISHED = 64  # finished jobs (and their event logs) kept for the page; older ones are forgotten


class Cancelled(BaseException):
    """Raised from the event listener to stop a conversion (a BaseException, so no handler swallows it)."""


def error_event(err: ConversionError) -> dict:
    """An error as the page shows it, with the troubleshooting anchor of its code."""
    return {"type": "error", "code": err.code, "message": err.message, "hint": err.hint,
            "doc": f"/troubleshooting#{err.code.lower()}"}


class Job:
    """One conversion: its options, its events so far and its outcome."""

    def __init__(self, checkpoint: Path, out_dir: Path, options: ConvertOptions, request: dict | None = None) -> None:
        self.id = secrets.token_hex(8)
        self.checkpoint, self.out_dir, self.options = checkpoint, out_dir, options
        self.request = request or {}  # the page's form, for verify to use the same model code
        self.events: list[dict] = []
        self.state = "running"
        self.report: dict | None = None
        self._cancel = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"convert-{self.id}", daemon=True)

    def emit(self, event: dict) -> None:
        """Record ``event``; raise :class:`Cancelled` when a cancel was requested (engine listener)."""
        if self._cancel.is_set() and event.get("type") not in FINAL:
            raise Cancelled()
        with self._changed:
            self.events.append({**event, "seq": len(self.events)})
            self._changed.notify_all()

    def cancel(self) -> None:
        self._cancel.set()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            report = convert(self.checkpoint, self.out_dir, self.options, events=self.emit)
            self.report = report.to_json()
            final = {"type": "done", "report": self.report, "seconds": round(time.perf_counter() - started, 3),
                     "files": sorted(p.name for p in self.out_dir.iterdir())}
        except Cancelled:
            final = {"type": "cancelled", "message": "the conversion was cancelled; nothing was written"}
        except ConversionError as err:
            final = error_event(err)
        except Exception as exc:  # an engine fault: still a coded error in the page, never a hang
            final = error_event(ConversionError("INTERNAL", f"{type(exc).__name__}: {exc}",
                                                "this is a bug in flax2tfjs; report it with the checkpoint"))
        self.state = final["type"]
        self.emit(final)

    def follow(self, start: int = 0, keepalive: float = 10.0) -> Iterator[dict | None]:
        """Every event from number ``start`` on, waiting for new ones until the final one
        (``None`` marks a quiet ``keepalive`` interval)."""
        index = start
        while True:
            with self._changed:
                finished = bool(self.events) and self.events[-1]["type"] in FINAL
                if index >= len(self.events) and finished:  # resumed past the end: the outcome, once
                    batch = [self.events[-1]]
                else:
                    index = min(index, len(self.events))  # no event past the next one can have been seen
                    if index >= len(self.events):
                        self._changed.wait(keepalive)
                    batch = self.events[index:]
            if not batch:
                yield None
                continue
            for event in batch:
                index += 1
                yield event
                if event["type"] in FINAL:
                    return

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


class Jobs:
    """Every job of this server; at most one running job per output folder."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, checkpoint: Path, out_dir: Path, options: ConvertOptions, request: dict | None = None) -> Job:
        """Start converting ``checkpoint`` into ``out_dir``; ``OUTPUT_BUSY`` while another job writes there."""
        with self._lock:
            for job in self._jobs.values():
                if job.state == "running" and job.out_dir == out_dir:
                    raise ConversionError("OUTPUT_BUSY", f"another conversion is writing {out_dir.name}",
                                          "wait for it to finish, cancel it, or choose another output folder")
            finished = [j for j in self._jobs.values() if j.state != "running"]
            for old in finished[:max(0, len(finished) - KEEP_FINISHED)]:  # oldest first (dicts keep order)
                del self._jobs[old.id]
            job = Job(checkpoint, out_dir, options, request)
            self._jobs[job.id] = job
            job._thread.start()
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise ConversionError("JOB_NOT_FOUND", f"no conversion {job_id!r} on this server",
                                  "start the conversion again (the studio forgets jobs when it restarts, "
                                  "and all but the last 64 finished ones)")
        return job

    def checkpoints_in_use(self) -> set[Path]:
        """The checkpoints that running conversions read (uploads must not expire under them)."""
        return {job.checkpoint for job in list(self._jobs.values()) if job.state == "running"}

    def cancel_all(self, wait: float = 0.0) -> None:
        """Cancel every running job; wait up to ``wait`` seconds in all for them to clean up and end."""
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        deadline = time.monotonic() + wait
        for job in jobs:
            job.wait(max(0.0, deadline - time.monotonic()))
