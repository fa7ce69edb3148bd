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
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from topology.vocabulary.errors import ConversionError

CHECKPOINT_SUFFIXES = (".msgpack", ".npz")  # files; Orbax checkpoints are folders
ORBAX_MARKERS = ("_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt", "checkpoint")
UPLOAD_PREFIX = "upload:"


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
        target = (self.path / rel).resolve()  # follows every symlink on the way
        if not self.contains(target):
            raise outside(text)
        if must_exist and not target.exists():
            raise ConversionError("CHECKPOINT_NOT_FOUND", f"no file or folder at {text}", "pick one from the list")
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
        for child in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
            if child.name.startswith("."):
                continue
            try:
                real = child.resolve()
            except OSError:
                continue
            if not self.contains(real):
                continue  # a symlink out of ROOT is not shown (nor followed)
            kind = _kind(real)
            if kind is None:
                continue
            size = real.stat().st_size if real.is_file() else 0
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
    """Dropped checkpoint files, streamed into a private temporary folder, at most ``limit`` bytes each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.folder = Path(tempfile.mkdtemp(prefix="flax2tfjs-studio-"))

    def save(self, name: str, length: int | None, stream: BinaryIO) -> str:
        """Copy ``length`` bytes of ``stream`` into a new file; return its handle ``upload:ID/NAME``."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(name or ""))[:100]
        if not safe.endswith(CHECKPOINT_SUFFIXES) or safe.startswith("."):
            raise ConversionError("UPLOAD_REFUSED", f"{name!r} is not a .msgpack or .npz file",
                                  "drop a Flax msgpack or numpy .npz checkpoint; pick Orbax folders from the list")
        if length is None:
            raise ConversionError("UPLOAD_REFUSED", "the upload has no Content-Length", "upload the file from the page")
        if length > self.limit:
            raise ConversionError("UPLOAD_TOO_LARGE", f"{safe} is {length:,} bytes; the limit is {self.limit:,}",
                                  "restart the studio with a larger --max-upload-mb, or put the file under ROOT")
        token = secrets.token_hex(8)
        target = self.folder / token / safe
        target.parent.mkdir()
        remaining = length
        with open(target, "wb") as out:
            while remaining > 0:
                chunk = stream.read(min(1 << 20, remaining))
                if not chunk:
                    break
                out.write(chunk)
                remaining -= len(chunk)
        if remaining:
            shutil.rmtree(target.parent, ignore_errors=True)
            raise ConversionError("UPLOAD_REFUSED", f"{safe}: the upload ended early", "drop the file again")
        return f"{UPLOAD_PREFIX}{token}/{safe}"

    def resolve(self, handle: str) -> Path:
        """The file of an ``upload:ID/NAME`` handle from :meth:`save`."""
        token, _, name = handle[len(UPLOAD_PREFIX):].partition("/")
        target = self.folder / token / name
        if not re.fullmatch(r"[0-9a-f]{16}", token) or "/" in name or not target.is_file():
            raise ConversionError("CHECKPOINT_NOT_FOUND", f"no uploaded file {handle}", "drop the file again")
        return target

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
