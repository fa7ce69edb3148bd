"""A cap on the studio's open connections, where idle ones make room for new ones.

Each accepted connection holds a slot until its handler ends. A connection that has not
finished sending its request headers is *waiting*; when every slot is taken, the connection
that has waited longest is shut down to admit the new one, and one that has waited longer
than ``header_seconds`` is shut down at the next arrival anyway. So connections that send
one header line and stall cannot lock others out; only when every slot serves a real request
is a newcomer refused (the server answers it 503 ``SERVER_BUSY``).

Example:
    >>> import socket
    >>> gate = ConnectionGate(limit=1, header_seconds=10)
    >>> a, b = socket.socketpair()
    >>> gate.admit(a)                    # a takes the only slot, still waiting for headers
    True
    >>> gate.admit(b), gate.waiting()    # a is shut down to make room for b
    (True, 1)
    >>> gate.headers_read(b); c, d = socket.socketpair()
    >>> gate.admit(c)                    # b serves a request: nobody to make room
    False
    >>> for s in (a, b, c, d): s.close()
"""
from __future__ import annotations

import socket
import threading
import time


class ConnectionGate:
    """At most ``limit`` open connections; stalled ones give way (see the module doc)."""

    def __init__(self, limit: int, header_seconds: float) -> None:
        self.limit, self.header_seconds = limit, header_seconds
        self._lock = threading.Lock()
        self._open: dict[socket.socket, float | None] = {}  # socket -> when it arrived, None once its headers are read

    def admit(self, conn: socket.socket) -> bool:
        """Take a slot for ``conn`` (shutting down stalled connections as needed); False when none is free."""
        now = time.monotonic()
        with self._lock:
            stale = [s for s, t in self._open.items() if t is not None and now - t > self.header_seconds]
            if len(self._open) - len(stale) >= self.limit:
                waiting = sorted((t, id(s), s) for s, t in self._open.items() if t is not None and s not in stale)
                if not waiting:
                    if not stale:
                        return False
                else:
                    stale.append(waiting[0][2])
            for stalled in stale:
                del self._open[stalled]
                _shut(stalled)
            self._open[conn] = now
            return True

    def headers_read(self, conn: socket.socket) -> None:
        """``conn`` sent a whole request head: it is serving now, not waiting."""
        with self._lock:
            if conn in self._open:
                self._open[conn] = None

    def leave(self, conn: socket.socket) -> None:
        """``conn`` is closed: its slot is free."""
        with self._lock:
            self._open.pop(conn, None)

    def waiting(self) -> int:
        """How many open connections have not sent their request headers yet."""
        with self._lock:
            return sum(t is not None for t in self._open.values())

    def count(self) -> int:
        with self._lock:
            return len(self._open)


def _shut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)  # its handler's read returns at once and the thread ends
    except OSError:
        pass  # already gone
