"""Check converted outputs against the values the benchmark generated, streaming.

A benchmark that only times would also "pass" with an empty file; these checks read the
written shards back (one weight at a time, whatever the model size) and compare them with
the generator's values.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from bench import checkpoints

_ITEMSIZE = {"float32": 4, "float16": 2, "uint16": 2, "uint8": 1, "int32": 4}


class ShardStream:
    """The concatenated shards of a model folder as one seekable byte stream.

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp())
        >>> _ = (d / "a.bin").write_bytes(b"abc"); _ = (d / "b.bin").write_bytes(b"defg")
        >>> ShardStream(d, ["a.bin", "b.bin"]).read(2, 3)
        b'cde'
    """

    def __init__(self, folder: Path, paths: list[str]) -> None:
        self.files = [Path(folder) / p for p in paths]
        self.sizes = [f.stat().st_size for f in self.files]
        self.total = sum(self.sizes)

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        start = 0
        for file, size in zip(self.files, self.sizes):
            if length and offset < start + size and offset + length > start:
                lo = max(offset, start) - start
                hi = min(offset + length, start + size) - start
                with open(file, "rb") as handle:
                    handle.seek(lo)
                    out += handle.read(hi - lo)
            start += size
        if len(out) != length:
            raise ValueError(f"asked {length} bytes at {offset}, the shards hold {self.total}")
        return bytes(out)


def weights(model_dir: Path) -> Iterator[tuple[dict, int, ShardStream]]:
    """``(spec, byte offset, stream)`` of every manifest weight, in order.

    Example:
        >>> next(weights(Path("web_demo/model")))[0]["name"]      # doctest: +SKIP
        'Conv_0/kernel'
    """
    doc = json.loads((Path(model_dir) / "model.json").read_text())
    offset = 0
    for group in doc["weightsManifest"]:
        stream = ShardStream(Path(model_dir), group["paths"])
        offset = 0
        for spec in group["weights"]:
            dtype = spec.get("quantization", {}).get("dtype", spec["dtype"])
            nbytes = int(np.prod(spec["shape"], dtype=np.int64)) * _ITEMSIZE[dtype]
            yield spec, offset, stream
            offset += nbytes


def load_weight(spec: dict, offset: int, stream: ShardStream) -> np.ndarray:
    """A weight's values as float32, dequantized like tfjs (``q * scale + min``).

    Example:
        >>> spec = {"name": "w", "shape": [2], "dtype": "float32"}     # doctest: +SKIP
    """
    quant = spec.get("quantization")
    dtype = quant["dtype"] if quant else spec["dtype"]
    count = int(np.prod(spec["shape"], dtype=np.int64))
    raw = np.frombuffer(stream.read(offset, count * _ITEMSIZE[dtype]), dtype=np.dtype(dtype).newbyteorder("<"))
    if quant and dtype in ("uint8", "uint16"):
        return (raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])).reshape(spec["shape"])
    return raw.astype(np.float32).reshape(spec["shape"])


_DENSE = re.compile(r"^Dense_(\d+)/(kernel|bias)$")


def check_mlp(model_dir: Path, seed: int = 0) -> dict:
    """Compare every weight of a converted benchmark MLP with :func:`bench.checkpoints.values`.

    float32 outputs must be bit-identical; quantized ones within half a step (+ float32
    rounding) of the original.

    Example:
        >>> check_mlp(Path("out"))                             # doctest: +SKIP
        {'weights': 32, 'ok': True, 'max_abs_error': 0.0, 'exact': True}
    """
    count, ok, exact, worst = 0, True, True, 0.0
    for spec, offset, stream in weights(model_dir):
        match = _DENSE.match(spec["name"])
        if not match:
            return {"weights": count, "ok": False, "error": f"unexpected weight {spec['name']}"}
        expected = checkpoints.values(seed, int(match.group(1)), match.group(2), tuple(spec["shape"]))
        got = load_weight(spec, offset, stream)
        error = float(np.max(np.abs(got.astype(np.float64) - expected))) if got.size else 0.0
        quant = spec.get("quantization")
        if quant and quant["dtype"] in ("uint8", "uint16"):
            bound = quant["scale"] / 2 + 1e-6 * max(1.0, float(np.max(np.abs(expected))))
        elif quant:  # float16
            bound = float(np.max(np.abs(expected))) * 2.0 ** -11 + 1e-7
        else:
            bound = 0.0
        ok &= error <= bound
        exact &= error == 0.0
        worst = max(worst, error)
        count += 1
    return {"weights": count, "ok": bool(ok and count > 0), "max_abs_error": worst, "exact": bool(exact)}
