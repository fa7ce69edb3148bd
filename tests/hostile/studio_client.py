"""A raw-socket client for the studio hostile suite: sends exactly the bytes given, reads to the close.

``http.client`` refuses to send many malformed requests (control characters in headers, bad
lengths), so the hostile tests write requests by hand and parse the answer loosely, counting
status lines so that a second one (a broken error path) is seen.
"""
from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Answer:
    raw: bytes
    status: int = 0
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0

    @property
    def status_lines(self) -> int:
        """How many HTTP status lines the answer holds (one, unless a response was split or doubled)."""
        lines = self.raw.split(b"\r\n")
        return sum(line.startswith((b"HTTP/1.0 ", b"HTTP/1.1 ")) for line in lines if len(line) < 200)

    @property
    def code(self) -> str | None:
        try:
            return json.loads(self.body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None


def parse(raw: bytes, seconds: float = 0.0) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    answer = Answer(raw, body=body, seconds=seconds)
    try:
        answer.status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return answer
    for line in lines[1:]:
        key, _, value = line.decode("latin-1").partition(":")
        answer.headers[key.strip().lower()] = value.strip()
    return answer


def send(port: int, request: bytes, timeout: float = 30.0, limit: int = 1 << 30) -> Answer:
    """Send ``request`` to 127.0.0.1:``port`` and read the whole answer (until the server closes)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        try:
            conn.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all: read what it said
        chunks, size = [], 0
        while size < limit:
            try:
                chunk = conn.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return parse(b"".join(chunks), time.monotonic() - started)


def request(port: int, method: str, path: str, headers: dict | None = None, body: bytes = b"",
            host: str | None = None, length: bool = True) -> bytes:
    """The bytes of an HTTP/1.1 request (``Content-Length`` added for a body unless ``length`` is False)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}"]
    given = {k.lower() for k in (headers or {})}
    if body and length and "content-length" not in given:
        lines.append(f"Content-Length: {len(body)}")
    encoded = [line.encode("utf-8", "surrogateescape") for line in lines]
    encoded += [k.encode() + b": " + (v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape"))
                for k, v in (headers or {}).items()]  # bytes values go as they are (e.g. a latin-1 b"\xb2")
    return b"\r\n".join(encoded) + b"\r\n\r\n" + body
