"""A one-line progress bar on stderr, drawn only when stderr is a terminal.

Conversions report per tensor (``Progress(name, bytes_written)`` from
:mod:`writer.weights`), verifications per batch of samples. Redraws are
throttled to ten a second so that thousands of small tensors cost nothing, and
the final state is always drawn, so the last screen shows where it ended.
Nothing is written when the stream is not a TTY (pipes, CI logs, ``--json``
consumers) or when the bar is disabled (``--quiet``).

Example:
    >>> import io
    >>> bar = ProgressBar("writing", total=8, unit="tensors", stream=io.StringIO())
    >>> bar.enabled          # a StringIO is not a terminal
    False
    >>> bar.advance(8); bar.close()
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from writer.term import human_bytes, is_terminal

_REDRAW_SECONDS = 0.1
# What a conversion is doing before its first tensor is written (writer.events stages); with
# --module, reading imports JAX and the model code and the graph stage traces it: seconds long.
STAGE_TEXT = {"read": "reading the checkpoint", "fix": "matching the weights to the model",
              "graph": "building the layer graph", "optimize": "optimizing the graph",
              "write": "writing weights"}
MODULE_STAGE_TEXT = {**STAGE_TEXT, "read": "reading the checkpoint, importing JAX and the model code",
                     "fix": "running the model code on abstract inputs", "graph": "tracing the model with JAX"}
_CLEAR_LINE = "\r\x1b[K"


class ProgressBar:
    """A throttled progress line: ``label [#####.....] 62%  5/8 tensors  2.0/3.1 MiB  name``.

    ``total`` counts items (tensors, samples); ``total_bytes`` is optional. Both
    may be estimates: a count past the estimate raises the estimate instead of
    showing more than 100 %.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> bar = ProgressBar("writing", total=2, total_bytes=8, stream=out, enabled=True, width=60)
        >>> bar("a/kernel", 4); bar("a/bias", 8); bar.close()
        >>> out.getvalue().rsplit("\\r\\x1b[K", 1)[-1]
        'writing [#####################] 100%  2/2 tensors  8 B/8 B\\n'
    """

    def __init__(self, label: str, total: int | None = None, total_bytes: int | None = None, *,
                 unit: str = "tensors", stream: TextIO | None = None, enabled: bool | None = None,
                 width: int | None = None, stage_text: dict[str, str] | None = None) -> None:
        self.label = label
        self.stage_text = STAGE_TEXT if stage_text is None else stage_text
        self.stage = ""  # shown until the first item is done
        self.total = total
        self.total_bytes = total_bytes
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = is_terminal(self.stream) if enabled is None else enabled
        self.width = width
        self.done = 0
        self.done_bytes = 0
        self.current = ""
        self._last_draw = 0.0
        self._drawn = False
        self._closed = False

    # The writer's Progress callback: (weight name, bytes written so far).
    def __call__(self, name: str, bytes_written: int) -> None:
        self.done += 1
        self.done_bytes = bytes_written
        self.current = name
        self._maybe_draw()

    def on_event(self, event: dict) -> None:
        """Follow a conversion's events (:mod:`writer.events`): ``tensor`` events carry the exact totals.

        Example:
            >>> bar = ProgressBar("writing", enabled=False)
            >>> bar.on_event({"type": "tensor", "name": "d/bias", "index": 1, "count": 2, "bytes": 8, "total_bytes": 16})
            >>> bar.render().split("]")[1].split()[:3]
            ['50%', '1/2', 'tensors']
            >>> staged = ProgressBar("writing", enabled=False, stage_text=MODULE_STAGE_TEXT)
            >>> staged.on_event({"type": "stage", "stage": "graph", "seconds": 1.5}); staged.render()
            'tracing the model with JAX ...'
        """
        if event.get("type") == "stage" and not self.done:
            self.stage = self.stage_text.get(event["stage"], event["stage"])
            if self.enabled:
                self._draw()
            return
        if event.get("type") != "tensor":
            return
        self.total, self.total_bytes = event["count"], event["total_bytes"]
        self(event["name"], event["bytes"])

    def advance(self, items: int = 1, name: str = "") -> None:
        """Count ``items`` more finished items (samples, batches)."""
        self.done += items
        self.current = name
        self._maybe_draw()

    def close(self) -> None:
        """Draw the final state and end the line (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self.current = ""
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "ProgressBar":
        if self.enabled:
            self._draw()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _maybe_draw(self) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not self._drawn or now - self._last_draw >= _REDRAW_SECONDS or self._finished():
            self._draw()

    def _finished(self) -> bool:
        return self.total is not None and self.done >= self.total

    def render(self) -> str:
        """The progress line as text (without control characters).

        Example:
            >>> bar = ProgressBar("verify", total=4, unit="samples", enabled=False, width=50)
            >>> bar.advance(1); bar.render()
            'verify [#####...............]  25%  1/4 samples'
        """
        if self.stage and not self.done and not self._closed:
            return f"{self.stage} ..."
        total = self.total if self.total is None else max(self.total, self.done)
        total_bytes = self.total_bytes if self.total_bytes is None else max(self.total_bytes, self.done_bytes)
        if self._closed and total is not None:  # estimates end as the true totals
            total, total_bytes = self.done, (self.done_bytes if total_bytes is not None else None)
        counts = f"{self.done}/{total} {self.unit}" if total is not None else f"{self.done} {self.unit}"
        if total_bytes:
            counts += f"  {human_bytes(self.done_bytes)}/{human_bytes(total_bytes)}"
        elif self.done_bytes:
            counts += f"  {human_bytes(self.done_bytes)}"
        columns = self.width or shutil.get_terminal_size((80, 24)).columns
        if total:
            fraction = self.done_bytes / total_bytes if total_bytes else self.done / total
            # An estimate reached is not the end: 100 % only once the work is really done.
            fraction = min(1.0 if self._closed else 0.99, fraction)
            bar_width = max(10, min(30, columns - len(self.label) - len(counts) - 12))
            filled = int(round(fraction * bar_width))
            line = f"{self.label} [{'#' * filled}{'.' * (bar_width - filled)}] {fraction * 100:3.0f}%  {counts}"
        else:
            line = f"{self.label}  {counts}"
        if self.current:
            room = columns - len(line) - 3
            if room > 8:
                name = self.current if len(self.current) <= room else "..." + self.current[-(room - 3):]
                line += f"  {name}"
        return line[: max(10, columns - 1)]

    def _draw(self) -> None:
        self.stream.write(_CLEAR_LINE + self.render())
        self.stream.flush()
        self._drawn = True
        self._last_draw = time.monotonic()
