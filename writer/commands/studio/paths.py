"""Every path the studio touches stays inside ROOT (symlinks resolved), or is an upload it made.

Example:
    >>> import tempfile; root = Root(Path(tempfile.mkdtemp()))
    >>> root.resolve("a/../b") == root.path / "b"
    True
    >>> root.resolve("../etc")
    Traceback (most recent call last):
    topology.vocabulary.errors.ConversionError: PATH_OUTSIDE_ROOT: ../etc is outside the studio's folder
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from topology.vocabulary.errors import ConversionError
from writer.readers.formats import file_suffixes, folder_markers

CHECKPOINT_SUFFIXES = file_suffixes()  # files; Orbax checkpoints are folders
ORBAX_MARKERS = folder_markers()
UPLOAD_PREFIX = "upload:"
UPLOAD_TOTAL_FACTOR = 4  # all uploads together: 4 x --max-upload-mb
UPLOAD_TTL_SECONDS = 3600.0  # an upload unused for an hour is taken as abandoned
UPLOAD_GRACE_SECONDS, UPLOAD_MIN_RATE = 20.0, 64 << 10  # an upload may take 20 s + its size at 64 KiB/s


def outside(text: str) -> ConversionError:
    return ConversionError("PATH_OUTSIDE_ROOT", f"{text} is outside the studio's folder",
                           "pick a file under the folder the studio was started in, or restart it with that "
                           "folder: python -m writer studio FOLDER")


@dataclass(frozen=True)
class Entry:
    """One row of a folder listing."""

    name: str
    path: str  # relative to ROOT, with '/'
    kind: str  # "folder" | "checkpoint" | "orbax" | "module"
    bytes: int

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "kind": self.kind, "bytes": self.bytes}


class Root:
    """The studio's folder: resolves user paths inside it and lists what can be converted."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).resolve()

    def resolve(self, text: str, must_exist: bool = False) -> Path:
        """``text`` (relative to ROOT) as a real path inside ROOT, or ``PATH_OUTSIDE_ROOT``."""
        if not isinstance(text, str) or "\x00" in text:
            raise outside(repr(text))
        rel = text.strip().replace("\\", "/")
        if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel) or rel.startswith("~"):
            raise outside(text)
        try:
            target = (self.path / rel).resolve()  # follows every symlink on the way
            missing = must_exist and not target.exists()
        except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
            reason = getattr(exc, "strerror", None) or "a symlink loop"
            raise ConversionError("CHECKPOINT_NOT_FOUND", f"{text[:120]} cannot be resolved ({reason})",
                                  "pick a file or folder from the list") from None
        if not self.contains(target):
            raise outside(text[:120])
        if missing:
            raise ConversionError("CHECKPOINT_NOT_FOUND", f"no file or folder at {text[:120]}", "pick one from the list")
        return target

    def contains(self, target: Path) -> bool:
        return target == self.path or self.path in target.parents

    def relative(self, target: Path) -> str:
        return "." if target == self.path else target.relative_to(self.path).as_posix()

    def free_output(self, checkpoint: str) -> str:
        """A new output folder for ``checkpoint`` (relative to ROOT, or an upload handle):
        ``<name>_tfjs`` beside it, else ``<name>_tfjs_2``, ``_3``... whichever does not exist yet.

        Example:
            >>> import tempfile; root = Root(Path(tempfile.mkdtemp())); (root.path / "m_tfjs").mkdir()
            >>> root.free_output("m.npz"), root.free_output("upload:0123456789abcdef/n.msgpack")
            ('m_tfjs_2', 'n_tfjs')
        """
        text = checkpoint.rsplit("/", 1)[-1] if checkpoint.startswith(UPLOAD_PREFIX) else checkpoint
        text = re.sub(r"\.(msgpack|npz)$", "", text.strip().replace("\\", "/").rstrip("/"))
        if text in ("", "."):  # ROOT itself is the checkpoint: a folder named after it, inside
            text = self.path.name or "model"
        base = f"{text}_tfjs"
        for n in range(1, 10_000):
            candidate = base if n == 1 else f"{base}_{n}"
            if not os.path.lexists(self.resolve(candidate)):  # PATH_OUTSIDE_ROOT for ../x
                return candidate
        return base  # 10,000 earlier conversions: let OUTPUT_NOT_EMPTY explain

    def listing(self, text: str) -> list[Entry]:
        """Folders, checkpoints and model files directly in ``text``; hidden names and links out are left out."""
        folder = self.resolve(text or ".", must_exist=True)
        if not folder.is_dir():
            raise ConversionError("NOT_A_FOLDER", f"{text} is not a folder", "pick a folder from the list")
        entries = []
        try:
            children = sorted(folder.iterdir(), key=lambda p: p.name.lower())
        except OSError as exc:
            raise ConversionError("NOT_A_FOLDER", f"{text} cannot be listed ({exc.strerror})", "pick another folder") from None
        for child in children:
            if child.name.startswith("."):
                continue
            try:
                real = child.resolve(strict=True)
                if not self.contains(real):
                    continue  # a symlink out of ROOT is not shown (nor followed)
                kind = _kind(real)
                size = real.stat().st_size if kind and real.is_file() else 0
            except (OSError, RuntimeError):
                continue  # a symlink loop, a dangling link, no permission: not listed, the rest is
            if kind is not None:
                entries.append(Entry(child.name, self.relative(folder / child.name), kind, size))
        return entries


def _kind(path: Path) -> str | None:
    if path.is_dir():
        return "orbax" if any((path / m).exists() for m in ORBAX_MARKERS) else "folder"
    if path.suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if path.suffix == ".py":
        return "module"
    return None


class Uploads:
    """Dropped checkpoint files, streamed into ``folder``: at most ``limit`` bytes each, ``total``
    together; one not used for ``ttl`` seconds (and not being converted) is removed.

    Example:
        >>> import io, tempfile
        >>> uploads = Uploads(100, Path(tempfile.mkdtemp()) / "uploads", total=150)
        >>> handle = uploads.save("a.npz", 100, io.BytesIO(bytes(100)))
        >>> uploads.save("b.npz", 100, io.BytesIO(bytes(100)))
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: UPLOADS_FULL: b.npz (100 bytes) would bring the uploads to 200 bytes; the studio keeps at most 150
        >>> uploads.ttl = 0; uploads.expire(); uploads.used()
        0
    """

    def __init__(self, limit: int, folder: Path | None = None, total: int | None = None,
                 ttl: float = UPLOAD_TTL_SECONDS, in_use: Callable[[], set[Path]] = set) -> None:
        self.limit = limit
        self.total = total if total is not None else UPLOAD_TOTAL_FACTOR * limit
        self.ttl = ttl
        self.folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="flax2tfjs-studio-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.grace_seconds, self.min_rate = UPLOAD_GRACE_SECONDS, UPLOAD_MIN_RATE
        self._in_use = in_use  # the checkpoints of running conversions: never expired under them
        self._lock = threading.Lock()
        self._files: dict[str, list] = {}  # token -> [bytes, last used (monotonic)]

    def used(self) -> int:
        """Bytes held by uploads (those being received included)."""
        with self._lock:
            return sum(size for size, _ in self._files.values())

    def expire(self) -> None:
        """Remove the uploads unused for ``ttl`` seconds that no running conversion reads."""
        busy = {p.parent.name for p in self._in_use() if self.folder in p.parents}
        now = time.monotonic()
        with self._lock:
            old = [t for t, (_, used) in self._files.items() if now - used > self.ttl and t not in busy]
            for token in old:
                del self._files[token]
        for token in old:
            shutil.rmtree(self.folder / token, ignore_errors=True)

    def save(self, name: str, length: int | None, stream: BinaryIO) -> str:
        """Copy ``length`` bytes of ``stream`` into a new file; return its handle ``upload:ID/NAME``."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(name or ""))[:100]
        if not safe.endswith(CHECKPOINT_SUFFIXES) or safe.startswith("."):
            raise ConversionError("UPLOAD_REFUSED", f"{name[:100]!r} is not a .msgpack or .npz file",
                                  "drop a Flax msgpack or numpy .npz checkpoint; pick Orbax folders from the list")
        if length is None:
            raise ConversionError("UPLOAD_REFUSED", "the upload has no Content-Length", "upload the file from the page")
        if length > self.limit:
            raise ConversionError("UPLOAD_TOO_LARGE", f"{safe} is {length:,} bytes; the limit is {self.limit:,}",
                                  "restart the studio with a larger --max-upload-mb, or put the file under ROOT")
        self.expire()
        token = secrets.token_hex(8)
        with self._lock:  # the bytes are reserved before they arrive: parallel uploads cannot overshoot
            used = sum(size for size, _ in self._files.values())
            if used + length > self.total:
                raise ConversionError(
                    "UPLOADS_FULL", f"{safe} ({length:,} bytes) would bring the uploads to {used + length:,} bytes; "
                    f"the studio keeps at most {self.total:,}",
                    f"convert what you uploaded, or wait: uploads unused for {self.ttl / 60:.0f} minutes are "
                    "removed; or put the file under ROOT")
            self._files[token] = [length, time.monotonic()]
        target = self.folder / token / safe
        remaining = length
        # A dribbling peer must not hold a connection for days: the upload gets a grace period
        # plus the time it takes at a slow but real rate.
        deadline = time.monotonic() + self.grace_seconds + length / self.min_rate
        read = getattr(stream, "read1", stream.read)  # read1: whatever arrived, so the deadline is checked often
        try:
            target.parent.mkdir()
            with open(target, "wb") as out:
                while remaining > 0 and time.monotonic() < deadline:
                    chunk = read(min(1 << 20, remaining))
                    if not chunk:
                        break
                    out.write(chunk)
                    remaining -= len(chunk)
        except OSError:  # the page stalled past the read timeout, or went away
            remaining = remaining or -1
        if remaining:
            self._drop(token)
            raise ConversionError("UPLOAD_REFUSED", f"{safe}: the upload ended early or came too slowly "
                                  f"(under {self.min_rate >> 10} KiB/s)", "drop the file again")
        return f"{UPLOAD_PREFIX}{token}/{safe}"

    def _drop(self, token: str) -> None:
        with self._lock:
            self._files.pop(token, None)
        shutil.rmtree(self.folder / token, ignore_errors=True)

    def resolve(self, handle: str) -> Path:
        """The file of an ``upload:ID/NAME`` handle from :meth:`save` (which counts as a use)."""
        self.expire()
        token, _, name = handle[len(UPLOAD_PREFIX):].partition("/")
        with self._lock:
            entry = self._files.get(token)
            if entry is not None:
                entry[1] = time.monotonic()
        target = self.folder / token / name
        if entry is None or not re.fullmatch(r"[0-9a-f]{16}", token) or not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", name) \
                or name.startswith(".") or not target.is_file():
            raise ConversionError("CHECKPOINT_NOT_FOUND", f"no uploaded file {handle[:120]}",
                                  "drop the file again (uploads unused for a while are removed)")
        return target

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
