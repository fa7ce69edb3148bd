"""Conversion events: what the engine tells a listener while it works.

:func:`writer.convert.convert` accepts ``events=``, a callable that receives one
JSON-ready dict per event, in order:

* ``{"type": "stage", "stage": "read" | "fix" | "graph" | "optimize" | "write", "seconds": t}``
* ``{"type": "notice", "kind": "warning" | "fixed" | "assumption", "code": ..., "message": ...}``
* ``{"type": "tensor", "name": "Dense_0/kernel", "index": 1, "count": 8, "bytes": ..., "total_bytes": ..., "seconds": t}``

The terminal progress bar (:meth:`writer.progress.ProgressBar.on_event`) and the
studio's Server-Sent Events (:mod:`writer.commands.studio`) both consume them. A listener
may raise to stop the conversion: the staged output folder is then removed, so
nothing is left behind (the studio's Cancel works this way).

Example:
    >>> seen = []
    >>> stream = EventStream(seen.append)
    >>> stream.stage("read")
    >>> tick = stream.tensor_progress(2, 16)
    >>> tick("d/kernel", 8)
    >>> [e["type"] for e in seen], seen[1]["index"], seen[1]["total_bytes"]
    (['stage', 'tensor'], 1, 16)
"""
from __future__ import annotations

import time
from typing import Callable

from topology.vocabulary.errors import Notice

EventSink = Callable[[dict], None]
# "fix" is the fit stage (writer/fit/); its event keeps the name documented in docs/api.md.
STAGES = ("read", "fix", "graph", "optimize", "write")  # the studio adds "verify" after these


class EventStream:
    """Turns engine steps into event dicts for ``sink`` (a no-op when ``sink`` is None)."""

    def __init__(self, sink: EventSink | None = None) -> None:
        self.sink = sink
        self.started = time.perf_counter()

    def _send(self, event: dict) -> None:
        if self.sink is not None:
            self.sink(event)

    def _elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 4)

    def stage(self, name: str) -> None:
        """Announce that stage ``name`` (one of :data:`STAGES`) begins."""
        self._send({"type": "stage", "stage": name, "seconds": self._elapsed()})

    def notice(self, notice: Notice) -> None:
        """Forward a notice as it is raised (a :class:`topology.vocabulary.errors.Notices` listener)."""
        self._send({"type": "notice", **notice.to_json()})

    def tensor_progress(self, count: int, total_bytes: int,
                        also: Callable[[str, int], None] | None = None) -> Callable[[str, int], None]:
        """A :data:`writer.weights.Progress` callback that sends one ``tensor`` event per weight written."""
        index = 0

        def progress(name: str, bytes_written: int) -> None:
            nonlocal index
            index += 1
            if also is not None:
                also(name, bytes_written)
            self._send({"type": "tensor", "name": name, "index": index, "count": count,
                        "bytes": int(bytes_written), "total_bytes": int(total_bytes), "seconds": self._elapsed()})

        return progress
