"""Where a model came from: the checkpoint's content hash, and user metadata files."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from writer.errors import ConversionError

_CHUNK = 1 << 20


def content_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted).

    Independent of where the checkpoint lies, so outputs are reproducible.

    Example:
        >>> import tempfile; f = Path(tempfile.mkdtemp()) / "a"; _ = f.write_bytes(b"x")
        >>> content_sha256(f)[:12]
        '2d711642b726'
    """
    digest = hashlib.sha256()
    if path.is_file():
        _hash_file(path, digest)
        return digest.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        _hash_file(file, digest)
    return digest.hexdigest()


def _hash_file(path: Path, digest) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


def read_metadata_option(spec: str) -> tuple[str, object]:
    """Parse ``KEY=FILE.json`` (the ``--metadata`` option) into (key, JSON value).

    Example:
        >>> read_metadata_option("nofile")                      # doctest: +SKIP
        Traceback (most recent call last):
        writer.errors.ConversionError: BAD_METADATA: ...
    """
    key, sep, filename = spec.partition("=")
    if not sep or not key or not filename:
        raise ConversionError("BAD_METADATA", f"--metadata {spec!r} is not KEY=FILE.json", "write e.g. --metadata labels=labels.json")
    if key == "flax2tfjs":
        raise ConversionError("BAD_METADATA", "the metadata key 'flax2tfjs' is reserved for provenance", "choose another key")
    try:
        return key, json.loads(Path(filename).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConversionError("BAD_METADATA", f"cannot read {filename} ({exc.strerror})", "check the file path") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConversionError("BAD_METADATA", f"{filename} is not valid JSON ({exc})", "the file must hold one JSON value") from exc
