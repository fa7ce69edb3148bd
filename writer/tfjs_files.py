"""Reading a TF.js LayersModel back: model.json, the weight manifest, the shards, the values.

The counterpart of the writer (``writer/weights.py`` + ``writer/shards.py``), like
tfjs-converter's ``read_weights.py``. tfjs's loader concatenates the shard files of
every manifest group, in order, into one stream and reads the weights from it back
to back (a weight may span two files); so does :class:`ShardStream`, one byte range
at a time, so a model of any size is read weight by weight.

``DTYPES`` is the one table of the weight dtypes tfjs decodes (the stored dtype:
the quantization's when there is one).

This module needs only numpy and the standard library: the export-savedmodel
worker loads it by its path inside TensorFlow's interpreter, where the project
is not importable.

Example:
    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "g1.bin").write_bytes(np.array([1.5, -2.0], "<f4").tobytes())
    >>> spec = {"name": "d/bias", "shape": [2], "dtype": "float32"}
    >>> _ = (folder / "model.json").write_text(json.dumps({"weightsManifest": [{"paths": ["g1.bin"], "weights": [spec]}]}))
    >>> read_weights(folder)["d/bias"].tolist()
    [1.5, -2.0]
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

# tfjs weight dtype -> how its values are stored (little-endian).
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "float16": np.dtype("<f2"),
    "uint16": np.dtype("<u2"),
    "uint8": np.dtype("u1"),
}
AFFINE_DTYPES = ("uint8", "uint16")  # quantized as q * scale + min
_UNKNOWN_ITEMSIZE = 4  # a dtype tfjs cannot decode is laid out like float32; decoding it names the dtype


def itemsize(dtype: str) -> int:
    """Bytes per value of a tfjs weight dtype.

    Example:
        >>> itemsize("float32"), itemsize("uint8")
        (4, 1)
    """
    return DTYPES[dtype].itemsize


def quantization_of(spec: dict) -> dict | None:
    """A manifest entry's ``quantization`` record, or None when it is not quantized.

    Example:
        >>> quantization_of({"name": "w", "shape": [1], "dtype": "float32", "quantization": {"dtype": "float16"}})
        {'dtype': 'float16'}
    """
    quant = spec.get("quantization")
    return quant if isinstance(quant, dict) and quant else None


def stored_dtype(spec: dict) -> str:
    """The dtype of a weight's bytes in the shards (the quantization's, when quantized).

    Example:
        >>> stored_dtype({"name": "w", "shape": [1], "dtype": "float32", "quantization": {"dtype": "uint8"}})
        'uint8'
    """
    quant = quantization_of(spec)
    return quant["dtype"] if quant else spec.get("dtype", "float32")


def element_count(spec: dict) -> int:
    """How many values a manifest entry holds.

    Example:
        >>> element_count({"name": "w", "shape": [3, 4], "dtype": "float32"})
        12
    """
    return int(np.prod(tuple(spec.get("shape", ())), dtype=np.int64))


def stored_nbytes(spec: dict) -> int:
    """How many bytes of the shards a manifest entry takes.

    Example:
        >>> stored_nbytes({"name": "w", "shape": [3, 4], "dtype": "float32", "quantization": {"dtype": "uint16"}})
        24
    """
    dtype = stored_dtype(spec)
    return element_count(spec) * (DTYPES[dtype].itemsize if dtype in DTYPES else _UNKNOWN_ITEMSIZE)


class WeightEntry(NamedTuple):
    """One manifest entry and where its bytes are in the stream of all shards."""

    spec: dict
    offset: int
    nbytes: int


def weight_entries(specs: Iterable[dict]) -> Iterator[WeightEntry]:
    """Every manifest entry (of all groups, in order) with its byte range, back to back.

    Example:
        >>> specs = [{"name": "a", "shape": [2], "dtype": "float32"}, {"name": "b", "shape": [3], "dtype": "int32"}]
        >>> [(e.spec["name"], e.offset, e.nbytes) for e in weight_entries(specs)]
        [('a', 0, 8), ('b', 8, 12)]
    """
    offset = 0
    for spec in specs:
        nbytes = stored_nbytes(spec)
        yield WeightEntry(spec, offset, nbytes)
        offset += nbytes


MAX_MODEL_JSON_BYTES = 256 << 20  # a 100,000-layer model.json is ~30 MB


class UnsafeModelPath(ValueError):
    """A model folder names a file outside itself, or a file that is not a regular file."""


def model_file(folder: str | Path, name: object) -> Path:
    """The file ``name`` of a model folder, confined to it: one rule for verify, export-savedmodel, the
    Node runner's Python side, the demo and the studio.

    ``name`` must be a plain relative path (``/``-separated, no ``..``, ``.``, empty part, backslash,
    NUL or absolute path) and, if it exists, resolve (symlinks followed) to a regular file inside
    the folder. Raises :class:`UnsafeModelPath` (a ValueError) otherwise. A missing file is returned
    as is: callers report it as missing.

    Example:
        >>> model_file("out", "group1-shard1of1.bin")
        PosixPath('out/group1-shard1of1.bin')
        >>> model_file("out", "../secret.bin")                 # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        writer.tfjs_files.UnsafeModelPath: the weight file '../secret.bin' is not a plain relative name ...
    """
    folder = Path(folder)
    parts = name.split("/") if isinstance(name, str) else None
    if not parts or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts) or name.startswith("/"):
        raise UnsafeModelPath(f"the weight file {name!r} is not a plain relative name inside {folder} "
                              "(absolute paths, '..' and empty parts are refused)")
    path = folder.joinpath(*parts)
    if os.path.lexists(path):
        real, root = os.path.realpath(path), os.path.realpath(folder)
        if os.path.commonpath([real, root]) != root:
            raise UnsafeModelPath(f"the weight file {name!r} of {folder} leads outside the folder (to {real})")
        if not os.path.exists(real) or not stat.S_ISREG(os.stat(real).st_mode):
            raise UnsafeModelPath(f"the weight file {name!r} of {folder} is not a regular file")
    return path


def read_model_json(folder: str | Path) -> dict:
    """The parsed ``model.json`` of a model folder (OSError / ValueError when it cannot be read, is larger
    than 256 MiB, or is nested too deep for Python's parser).

    Example:
        >>> read_model_json("/nonexistent")                 # doctest: +ELLIPSIS
        Traceback (most recent call last):
        FileNotFoundError: ...
    """
    path = Path(folder) / "model.json"
    with open(path, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ValueError(f"{path} is not a regular file")
        data = handle.read(MAX_MODEL_JSON_BYTES + 1)
    if len(data) > MAX_MODEL_JSON_BYTES:
        raise ValueError(f"{path} is larger than {MAX_MODEL_JSON_BYTES >> 20} MiB")
    try:
        document = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be a model.json") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} holds a {type(document).__name__}, not a JSON object")
    return document


def manifest_files(folder: str | Path, document: dict) -> tuple[list[dict], list[Path]]:
    """The manifest entries and the shard files of every group, in stream order.

    Example:
        >>> doc = {"weightsManifest": [{"paths": ["a.bin"], "weights": [{"name": "w"}]}]}
        >>> manifest_files("out", doc)
        ([{'name': 'w'}], [PosixPath('out/a.bin')])
    """
    manifest = document["weightsManifest"]
    specs = [spec for group in manifest for spec in group["weights"]]
    paths = [model_file(folder, p) for group in manifest for p in group["paths"]]
    return specs, paths


class ShardStream:
    """The shard files as one byte stream; :meth:`read` may return fewer bytes at its end.

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp())
        >>> _ = (d / "a.bin").write_bytes(b"abc"); _ = (d / "b.bin").write_bytes(b"defg")
        >>> stream = ShardStream([d / "a.bin", d / "b.bin"])
        >>> stream.read(2, 3), stream.read(5, 4), stream.total
        (b'cde', b'fg', 7)
    """

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.files = [Path(p) for p in paths]
        self.sizes = [f.stat().st_size for f in self.files]
        self.total = sum(self.sizes)

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        start = 0
        for file, size in zip(self.files, self.sizes):
            if length > 0 and offset < start + size and offset + length > start:
                low = max(offset, start) - start
                high = min(offset + length, start + size) - start
                with open(file, "rb") as handle:
                    handle.seek(low)
                    out += handle.read(high - low)
            start += size
        return bytes(out)


def decode_weight(spec: dict, data: bytes) -> np.ndarray:
    """A weight's values from its bytes, dequantized as tfjs's ``decodeWeight`` does.

    ``uint8`` / ``uint16`` become ``q * scale + min`` (in float32 arithmetic), ``float16``
    becomes float32; others keep their dtype. Raises KeyError for a dtype tfjs cannot
    decode and ValueError for too few bytes.

    Example:
        >>> spec = {"name": "w", "shape": [3], "dtype": "float32",
        ...         "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}}
        >>> decode_weight(spec, bytes([0, 2, 4])).tolist()
        [-1.0, 0.0, 1.0]
    """
    quant = quantization_of(spec)
    dtype = stored_dtype(spec)
    stored = DTYPES[dtype]
    count = element_count(spec)
    if len(data) < count * stored.itemsize:
        raise ValueError(f"{spec.get('name', '?')}: {len(data)} of {count * stored.itemsize} bytes in the shards")
    values = np.frombuffer(data, stored, count).reshape(tuple(spec.get("shape", ())))
    if quant and dtype in AFFINE_DTYPES:
        values = values.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
    return values.astype(np.float32 if spec.get("dtype", "float32") == "float32" else values.dtype)


def read_weights(folder: str | Path, document: dict | None = None) -> dict[str, np.ndarray]:
    """``{name: values}`` of every weight of a model folder (``document``: its model.json, read when None).

    Example:
        >>> sorted(read_weights("web_demo/model"))[:1]        # doctest: +SKIP
        ['Conv_0/bias']
    """
    document = read_model_json(folder) if document is None else document
    specs, paths = manifest_files(folder, document)
    stream = ShardStream(paths)
    return {entry.spec["name"]: decode_weight(entry.spec, stream.read(entry.offset, entry.nbytes))
            for entry in weight_entries(specs)}
