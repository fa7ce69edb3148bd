"""Read the key/value pairs of a tensorstore OCDBT database (what Orbax writes by default) in pure Python.

Layout (tensorstore's "OCDBT format" documentation): ``manifest.ocdbt`` holds the config and the
newest B+tree root's location; B+tree nodes and large values live in data files under ``d/``
(or, for a multi-process save merged into one root, under ``ocdbt.process_N/d/``). Nodes and the
manifest are framed as magic, length, version, compression (0 none, 1 zstd), body, crc32c.

Only what Orbax writes is read: a single-file manifest (``manifest_kind`` 0) with inline versions.
Anything else, and any damage, raises :class:`Unreadable`; the caller then falls back to tensorstore,
which names the damage. Every read is bounded by the file's size, every decoded node by
``MAX_NODE_BYTES``, and each node is visited once (a cycle cannot loop).

Example:
    >>> from pathlib import Path
    >>> db = OcdbtReader(Path("examples/mnist_ckpt"))    # doctest: +SKIP
    >>> sorted(db.keys())[0]                              # doctest: +SKIP
    b'params.Conv_0.bias/.zarray'
"""
from __future__ import annotations

import io
import os
import stat
import struct
from pathlib import Path
from typing import Callable

from writer.readers import zstd_lib

MANIFEST_MAGIC = 0x0CDB3A2A
BTREE_MAGIC = 0x0CDB20DE
MAX_NODE_BYTES = 64 << 20  # decoded; tensorstore's default node limit is 100 MB, Orbax nodes are KBs
MAX_MANIFEST_BYTES = 16 << 20
MAX_HEIGHT = 64


class Unreadable(Exception):
    """This reader cannot (or will not) read the database; tensorstore should try instead."""


def file_range_reader(path: Path, offset: int, length: int, name: str) -> Callable[[int], bytes]:
    """``read(n)``: the next up to ``n`` of the ``length`` bytes at ``offset`` of ``path`` (``b""`` after them).

    Each call opens the file and reads with ``pread`` (a step is a MiB: the open costs nothing
    next to it), so no descriptor is left open when the consumer stops early. A file that is
    shorter than promised raises :class:`Unreadable`.

    Example:
        >>> import tempfile; f = Path(tempfile.mkdtemp()) / "d"; _ = f.write_bytes(b"0123456789")
        >>> read = file_range_reader(f, 2, 5, "d"); read(3), read(3), read(3)
        (b'234', b'56', b'')
    """
    done = 0

    def read(n: int) -> bytes:
        nonlocal done
        n = min(n, length - done)
        if n <= 0:
            return b""
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                data = os.pread(fd, n, offset + done)
            finally:
                os.close(fd)
        except OSError as exc:
            raise Unreadable(f"cannot read data file {name}: {exc}") from exc
        if len(data) != n:
            raise Unreadable(f"{name} is shorter than its size said")
        done += n
        return data

    return read


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``; pure Python, used on manifests and nodes (kilobytes).

    Example:
        >>> hex(crc32c(b"123456789"))
        '0xe3069283'
    """
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class _Cursor:
    """Reads varints, bytes and fixed-width integers from a buffer, refusing to run past its end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varint(self, limit: int = 1 << 64) -> int:
        value = shift = 0
        while True:
            if self.pos >= len(self.data) or shift > 63:
                raise Unreadable("truncated or overlong varint")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if value >= limit:
            raise Unreadable(f"value {value} out of range")
        return value

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Unreadable("truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]


def _unframe(encoded: bytes, magic: int, what: str, limit: int) -> bytes:
    """The body of a manifest or node: checks magic, length, version and crc32c, then decompresses."""
    if len(encoded) < 18:
        raise Unreadable(f"{what} is too short")
    if struct.unpack_from(">I", encoded)[0] != magic:
        raise Unreadable(f"{what} has the wrong magic number")
    if struct.unpack_from("<Q", encoded, 4)[0] != len(encoded):
        raise Unreadable(f"{what} declares another length than it has")
    if struct.unpack_from("<I", encoded, len(encoded) - 4)[0] != crc32c(encoded[:-4]):
        raise Unreadable(f"{what} fails its crc32c checksum")
    cursor = _Cursor(encoded[:-4])
    cursor.pos = 12
    if cursor.varint() != 0:
        raise Unreadable(f"{what} has an unknown format version")
    compression = cursor.varint()
    body = encoded[cursor.pos:-4]
    if compression == 0:
        return body
    if compression == 1:
        try:
            return bytes(zstd_lib.decompress(body, limit))
        except zstd_lib.ZstdError as exc:
            raise Unreadable(f"{what}: {exc}") from exc
    raise Unreadable(f"{what} uses unknown compression {compression}")


def _data_file_table(cursor: _Cursor, transitive: bytes) -> list[tuple[bytes, bytes]]:
    """``(full path, transitive path for children)`` of each data file a manifest or node names."""
    count = cursor.varint(1 << 20)
    prefixes = [0] + [cursor.varint(1 << 16) for _ in range(max(0, count - 1))]
    suffixes = [cursor.varint(1 << 16) for _ in range(count)]
    bases = [cursor.varint(1 << 16) for _ in range(count)]
    files, previous = [], b""
    for i in range(count):
        if prefixes[i] > len(previous):
            raise Unreadable("data file table prefix longer than the previous path")
        path = previous[:prefixes[i]] + cursor.take(suffixes[i])
        if bases[i] > len(path):
            raise Unreadable("data file base path longer than the path")
        files.append((transitive + path, transitive + path[:bases[i]]))
        previous = path
    return files


class OcdbtReader:
    """The keys of one OCDBT database folder, and their values read on demand.

    Listing walks the whole B+tree once (Orbax trees hold two keys per array); values stored
    out of line are read from their data file only when asked for.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(os.path.realpath(folder))
        self.values: dict[bytes, bytes | tuple[bytes, int, int]] = {}
        self.stored_bytes = 0  # bytes of the data files the tree points into
        self.height = 0  # of the newest root: 0 when one leaf holds every key
        self._sizes: dict[bytes, int] = {}
        self._read_manifest()

    def keys(self) -> list[bytes]:
        return list(self.values)

    # -- files

    def _file(self, relative: bytes) -> Path:
        text = relative.decode("utf-8", "strict") if relative else ""
        target = Path(os.path.realpath(self.folder / text))
        if self.folder not in target.parents:
            raise Unreadable(f"data file {text!r} lies outside the database folder")
        return target

    def _size(self, relative: bytes) -> int:
        if relative not in self._sizes:
            try:
                info = os.stat(self._file(relative))
            except OSError as exc:
                raise Unreadable(f"cannot stat data file {relative!r}: {exc}") from exc
            if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read forever
                raise Unreadable(f"data file {relative!r} is not a regular file")
            self._sizes[relative] = info.st_size
            self.stored_bytes += info.st_size
        return self._sizes[relative]

    def read_range(self, relative: bytes, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of a data file, refused if they lie past its end."""
        if offset + length > self._size(relative):
            raise Unreadable(f"{relative!r}: bytes {offset}..{offset + length} lie past its end")
        try:
            with open(self._file(relative), "rb") as handle:
                handle.seek(offset)
                data = handle.read(length)
        except OSError as exc:
            raise Unreadable(f"cannot read data file {relative!r}: {exc}") from exc
        if len(data) != length:
            raise Unreadable(f"{relative!r} is shorter than its size said")
        return data

    def value_reader(self, key: bytes) -> tuple[Callable[[int], bytes], int]:
        """``(read, size)``: the value under ``key`` read ``read(n)`` bytes at a time, and its size.

        A large value (a zarr chunk of tens of MB) is then never whole in memory; ``read``
        raises :class:`Unreadable` where :meth:`value` would. ``KeyError`` when there is none.
        """
        found = self.values[key]
        if isinstance(found, bytes):
            return io.BytesIO(found).read, len(found)
        relative, offset, length = found
        if offset + length > self._size(relative):
            raise Unreadable(f"{relative!r}: bytes {offset}..{offset + length} lie past its end")
        return file_range_reader(self._file(relative), offset, length, repr(relative)), length

    def value(self, key: bytes) -> bytes:
        """The value stored under ``key`` (``KeyError`` when there is none)."""
        found = self.values[key]
        if isinstance(found, bytes):
            return found
        return self.read_range(*found)

    def value_size(self, key: bytes) -> int:
        found = self.values[key]
        return len(found) if isinstance(found, bytes) else found[2]

    # -- manifest and tree

    def _read_manifest(self) -> None:
        path = self.folder / "manifest.ocdbt"
        try:
            info = os.stat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MANIFEST_BYTES:
                raise Unreadable("manifest.ocdbt is not a regular file of plausible size")
            encoded = path.read_bytes()
        except OSError as exc:
            raise Unreadable(f"cannot read manifest.ocdbt: {exc}") from exc
        cursor = _Cursor(_unframe(encoded, MANIFEST_MAGIC, "manifest.ocdbt", MAX_MANIFEST_BYTES))
        cursor.take(16)  # uuid
        if cursor.varint() != 0:
            raise Unreadable("numbered manifests are not read directly")
        cursor.varint()  # max_inline_value_bytes
        cursor.varint()  # max_decoded_node_bytes
        cursor.byte()  # version_tree_arity_log2
        if cursor.varint() == 1:
            cursor.take(4)  # zstd level
        files = _data_file_table(cursor, b"")
        count = cursor.varint(1 << 20)
        if count == 0:
            raise Unreadable("the manifest names no version")
        columns = [[cursor.varint() for _ in range(count)]]  # generation numbers
        columns.append([cursor.byte() for _ in range(count)])  # root heights
        for _ in range(3):  # data file id, offset, length
            columns.append([cursor.varint() for _ in range(count)])
        _gen, height, file_id, offset, length = (column[-1] for column in columns)  # newest version
        self.height = height
        if length == 0:  # an empty tree: no keys
            return
        self._walk(files, file_id, offset, length, height, b"", set())

    def _walk(self, files: list[tuple[bytes, bytes]], file_id: int, offset: int, length: int,
              height: int, prefix: bytes, seen: set) -> None:
        if file_id >= len(files):
            raise Unreadable("node reference names no data file")
        path, transitive = files[file_id]
        where = (path, offset, length)
        if where in seen or len(seen) > 1_000_000 or height > MAX_HEIGHT:
            raise Unreadable("the B+tree has a cycle or is implausibly large")
        seen.add(where)
        body = _unframe(self.read_range(path, offset, length), BTREE_MAGIC, "a B+tree node", MAX_NODE_BYTES)
        cursor = _Cursor(body)
        if cursor.byte() != height:
            raise Unreadable("a B+tree node has another height than its parent says")
        node_files = _data_file_table(cursor, transitive)
        count = cursor.varint(1 << 20)
        if count == 0:
            raise Unreadable("empty B+tree node")
        keys = self._keys(cursor, count, interior=height > 0)
        if height > 0:
            ids = [cursor.varint() for _ in range(count)]
            offsets = [cursor.varint() for _ in range(count)]
            lengths = [cursor.varint() for _ in range(count)]
            for (key, common), i, o, n in zip(keys, ids, offsets, lengths):
                self._walk(node_files, i, o, n, height - 1, prefix + key[:common], seen)
            return
        lengths = [cursor.varint() for _ in range(count)]
        kinds = [cursor.byte() for _ in range(count)]
        if any(kind > 1 for kind in kinds):
            raise Unreadable("unknown value kind in a B+tree leaf")
        indirect = [i for i in range(count) if kinds[i] == 1]
        ids = [cursor.varint() for _ in indirect]
        offsets = [cursor.varint() for _ in indirect]
        for i, file_index, value_offset in zip(indirect, ids, offsets):
            if file_index >= len(node_files):
                raise Unreadable("value reference names no data file")
            self.values[prefix + keys[i][0]] = (node_files[file_index][0], value_offset, lengths[i])
        for i in range(count):
            if kinds[i] == 0:
                self.values[prefix + keys[i][0]] = cursor.take(lengths[i])
        if cursor.pos != len(body):
            raise Unreadable("trailing bytes after a B+tree leaf")

    @staticmethod
    def _keys(cursor: _Cursor, count: int, interior: bool) -> list[tuple[bytes, int]]:
        """Relative keys of a node's entries, each with its subtree's common prefix length (interior)."""
        prefixes = [0] + [cursor.varint(1 << 16) for _ in range(count - 1)]
        suffixes = [cursor.varint(1 << 16) for _ in range(count)]
        commons = [cursor.varint(1 << 16) for _ in range(count)] if interior else [0] * count
        keys, previous = [], b""
        for i in range(count):
            if prefixes[i] > len(previous):
                raise Unreadable("key prefix longer than the previous key")
            key = previous[:prefixes[i]] + cursor.take(suffixes[i])
            if i and key <= previous:
                raise Unreadable("B+tree keys out of order")
            if commons[i] > len(key):
                raise Unreadable("subtree prefix longer than its key")
            keys.append((key, commons[i]))
            previous = key
        return keys
