"""Where a model came from: the checkpoint's content hash, and user metadata files."""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from topology.vocabulary.errors import ConversionError
from writer.regular_files import loads_strict_json, read_small_file

_CHUNK = 1 << 20
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
