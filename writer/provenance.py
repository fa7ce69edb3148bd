"""Where a model came from: the checkpoint's content hash or fingerprint, and user metadata files.

A checkpoint of at most :data:`FULL_HASH_LIMIT` bytes (and any checkpoint with ``--full-hash``)
is identified by the sha256 of its whole content, computed on a second thread while the weights
are written. A larger one gets a *sampled* fingerprint by default: the sha256 of its size and
names, its first and last MiB and 64 blocks of 64 KiB spread evenly over every file. Hashing a
gigabyte costs about a second of CPU (more than copying it), so the full hash was the critical
path of big conversions; the fingerprint reads about 6 MB per file and still tells apart any two
trained checkpoints (training changes every block), but not two files that differ only between
the samples: ask ``--full-hash`` for a byte-exact identity.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Callable

from topology.vocabulary.errors import ConversionError
from writer.regular_files import loads_strict_json, read_small_file

_CHUNK = 1 << 20
FULL_HASH_LIMIT = 64 << 20  # the full sha256 of up to 64 MiB costs < 0.1 s, overlapped with the writing
_EDGE = 1 << 20  # the sampled fingerprint reads each file's first and last MiB ...
_BLOCKS, _BLOCK = 64, 64 << 10  # ... and 64 evenly spaced blocks of 64 KiB
MAX_METADATA_BYTES = 16 << 20  # model.json is loaded whole by every browser that uses the model


def content_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted).

    Independent of where the checkpoint lies, so outputs are reproducible.

    Example:
        >>> import tempfile; f = Path(tempfile.mkdtemp()) / "a"; _ = f.write_bytes(b"x")
        >>> content_sha256(f)[:12]
        '2d711642b726'
    """
    digest = hashlib.sha256()
    _hash_path(Path(path), digest)
    return digest.hexdigest()


def sampled_fingerprint(path: Path) -> str:
    """``sampled-sha256:<hex>``: the sha256 of a file's (or folder's files') names, sizes and sampled blocks.

    Reads at most about 6 MiB per file whatever its size; files up to 6 MiB are read whole.

    Example:
        >>> import tempfile; f = Path(tempfile.mkdtemp()) / "a"; _ = f.write_bytes(b"x")
        >>> sampled_fingerprint(f)[:27]
        'sampled-sha256:1560cafb2f54'
    """
    path = Path(path)
    digest = hashlib.sha256(b"flax2tfjs sampled fingerprint v1\0")
    files = [(path, "")] if path.is_file() else [(f, f.relative_to(path).as_posix())
                                                 for f in sorted(p for p in path.rglob("*") if p.is_file())]
    for file, name in files:
        with open(file, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            digest.update(f"{name}\0{size}\0".encode())
            if size <= 2 * _EDGE + _BLOCKS * _BLOCK:
                digest.update(handle.read())
                continue
            offsets = [0, size - _EDGE] + [_EDGE + (size - 2 * _EDGE - _BLOCK) * i // (_BLOCKS - 1)
                                           for i in range(_BLOCKS)]
            for offset in offsets:
                handle.seek(offset)
                digest.update(handle.read(_EDGE if offset in (0, size - _EDGE) else _BLOCK))
    return f"sampled-sha256:{digest.hexdigest()}"


def content_bytes(path: Path) -> int:
    """Size of a file, or the total of a folder's files.

    Example:
        >>> import tempfile; f = Path(tempfile.mkdtemp()) / "a"; _ = f.write_bytes(b"xy")
        >>> content_bytes(f)
        2
    """
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def source_identity(path: Path, full_hash: bool = False) -> tuple[Callable[[], dict], Callable[[], None]]:
    """How the provenance names a checkpoint: ``(identity, cancel)``; ``identity()`` is the ``source`` fields.

    ``{"sha256": ...}`` (hashed on a second thread from now on) for checkpoints up to
    :data:`FULL_HASH_LIMIT` bytes or with ``full_hash``, else ``{"fingerprint": "sampled-sha256:..."}``.

    Example:
        >>> import tempfile; f = Path(tempfile.mkdtemp()) / "a"; _ = f.write_bytes(b"x")
        >>> identity, cancel = source_identity(f); sorted(identity())
        ['sha256']
    """
    if full_hash or content_bytes(path) <= FULL_HASH_LIMIT:
        digest = BackgroundDigest(path)
        return (lambda: {"sha256": digest()}), digest.cancel
    fingerprint = sampled_fingerprint(path)
    return (lambda: {"fingerprint": fingerprint}), (lambda: None)


def _hash_path(path: Path, digest, cancelled: threading.Event | None = None) -> None:
    if path.is_file():
        _hash_file(path, digest, cancelled)
        return
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        _hash_file(file, digest, cancelled)


def _hash_file(path: Path, digest, cancelled: threading.Event | None = None) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            if cancelled is not None and cancelled.is_set():
                return
            digest.update(chunk)


class BackgroundDigest:
    """:func:`content_sha256` computed in a thread while the conversion runs; call it for the hex.

    Hashing a checkpoint is a second full read of it (about 0.5-1 s per GB); hashlib and file
    reads release the GIL, so on a second core it overlaps the weight writing instead of
    adding to it. Errors surface when the result is asked for; :meth:`cancel` stops early.

    Example:
        >>> import tempfile; f = Path(tempfile.mkdtemp()) / "a"; _ = f.write_bytes(b"x")
        >>> BackgroundDigest(f)() == content_sha256(f)
        True
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._cancelled = threading.Event()
        self._result: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flax2tfjs-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            digest = hashlib.sha256()
            _hash_path(self._path, digest, self._cancelled)
            self._result = digest.hexdigest()
        except BaseException as exc:  # re-raised in the caller's thread by __call__
            self._error = exc

    def __call__(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._cancelled.is_set() or self._result is None:
            return content_sha256(self._path)  # cancelled, then asked for after all
        return self._result

    def cancel(self) -> None:
        """Stop hashing (e.g. the conversion failed); a later call hashes synchronously."""
        self._cancelled.set()


def metadata_options(specs: list[str]) -> dict:
    """Every ``--metadata KEY=FILE.json`` as one dict; a key given twice is an error (not "the last wins").

    Example:
        >>> metadata_options([])
        {}
    """
    metadata: dict = {}
    for spec in specs:
        key, value = read_metadata_option(spec)
        if key in metadata:
            raise ConversionError("BAD_METADATA", f"--metadata {key}=... is given twice",
                                  "give each key once (put several values in one JSON file)")
        metadata[key] = value
    return metadata


def check_metadata(metadata: dict, where: str = "metadata") -> None:
    """``BAD_METADATA`` unless ``metadata`` is JSON that model.json can hold as UTF-8 (string keys, no NaN, no
    lone surrogate such as ``"\\ud800"``, which JSON escapes can spell but UTF-8 cannot encode).

    Example:
        >>> check_metadata({"labels": ["\\ud800"]})      # doctest: +ELLIPSIS
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: BAD_METADATA: metadata holds a string that is not valid Unicode ...
    """
    try:
        json.dumps(metadata, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[max(0, exc.start - 20):exc.end + 20]
        raise ConversionError("BAD_METADATA", f"{where} holds a string that is not valid Unicode (a lone surrogate "
                              f"near {bad!r})", "remove the \\udXXX escape, or pair it as JSON's UTF-16 escapes do") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConversionError("BAD_METADATA", f"{where} cannot be written as JSON ({str(exc)[:200]})",
                              "use JSON values only: dicts with string keys, lists, strings, numbers (no NaN), "
                              "booleans, null, nested at most 64 levels") from None


def read_metadata_option(spec: str) -> tuple[str, object]:
    """Parse ``KEY=FILE.json`` (the ``--metadata`` option) into (key, JSON value).

    Example:
        >>> read_metadata_option("nofile")                      # doctest: +SKIP
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: BAD_METADATA: ...
    """
    key, sep, filename = spec.partition("=")
    if not sep or not key or not filename:
        raise ConversionError("BAD_METADATA", f"--metadata {spec!r} is not KEY=FILE.json", "write e.g. --metadata labels=labels.json")
    if key == "flax2tfjs":
        raise ConversionError("BAD_METADATA", "the metadata key 'flax2tfjs' is reserved for provenance", "choose another key")

    try:
        value = loads_strict_json(read_small_file(Path(filename), MAX_METADATA_BYTES, "--metadata").decode("utf-8"))
        check_metadata({key: value}, f"--metadata {key}={filename}")
        return key, value
    except OSError as exc:
        raise ConversionError("BAD_METADATA", f"cannot read {filename} ({exc.strerror})", "check the file path") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConversionError("BAD_METADATA", f"{filename} is not valid JSON ({exc})",
                              "the file must hold one JSON value, without NaN/Infinity, nested at most 64 levels") from exc
