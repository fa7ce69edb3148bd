"""Write one byte stream into fixed-size shard files, streaming.

tfjs concatenates all shards of all groups into one stream and reads tensors
back to back, so a tensor may span shard files; only the total is needed to
name the files ``group1-shard{i}of{n}.bin`` up front.
"""
from __future__ import annotations

import math
from pathlib import Path

DEFAULT_SHARD_BYTES = 4 * 1024 * 1024


def shard_names(total_bytes: int, shard_bytes: int, group: int = 1) -> list[str]:
    """File names for ``total_bytes`` split into shards of ``shard_bytes``.

    Example:
        >>> shard_names(10, 4)
        ['group1-shard1of3.bin', 'group1-shard2of3.bin', 'group1-shard3of3.bin']
    """
    count = max(1, math.ceil(total_bytes / shard_bytes))
    return [f"group{group}-shard{i}of{count}.bin" for i in range(1, count + 1)]


class ShardWriter:
    """Append bytes; files roll over every ``shard_bytes``. Holds no data itself.

    Example:
        >>> import tempfile; folder = Path(tempfile.mkdtemp())
        >>> with ShardWriter(folder, total_bytes=6, shard_bytes=4) as w:
        ...     w.write(b"abcdef")
        >>> sorted(p.stat().st_size for p in folder.iterdir())
        [2, 4]
    """

    def __init__(self, folder: Path, total_bytes: int, shard_bytes: int = DEFAULT_SHARD_BYTES, group: int = 1) -> None:
        if shard_bytes < 1:
            raise ValueError("shard size must be at least 1 byte")
        self.folder = Path(folder)
        self.names = shard_names(total_bytes, shard_bytes, group)
        self.total_bytes = total_bytes
        self.shard_bytes = shard_bytes
        self.written = 0
        self._index = 0
        self._handle = open(self.folder / self.names[0], "wb")

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        if self.written + len(view) > self.total_bytes:
            raise ValueError("more bytes written than announced")
        while len(view):
            room = self.shard_bytes - (self.written - self._index * self.shard_bytes)
            if room == 0:
                self._next_file()
                continue
            chunk = view[:room]
            self._handle.write(chunk)
            self.written += len(chunk)
            view = view[len(chunk):]

    def _next_file(self) -> None:
        self._handle.close()
        self._index += 1
        self._handle = open(self.folder / self.names[self._index], "wb")

    def close(self) -> None:
        self._handle.close()
        if self.written != self.total_bytes:
            raise ValueError(f"wrote {self.written} bytes, announced {self.total_bytes}")

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is None:
            self.close()
        else:
            self._handle.close()
