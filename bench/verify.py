"""Check converted outputs against the values the benchmark generated, streaming.

A benchmark that only times would also "pass" with an empty file; these checks read the
written shards back (one weight at a time, whatever the model size) and compare them with
the generator's values.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from bench import checkpoints
from writer.tfjs_files import (ShardStream, decode_weight, manifest_files, read_model_json, stored_nbytes,
                               weight_entries)


def weights(model_dir: Path) -> Iterator[tuple[dict, int, ShardStream]]:
    """``(spec, byte offset, stream)`` of every manifest weight, in order (:mod:`writer.tfjs_files` reads them).

    Example:
        >>> next(weights(Path("web_demo/model")))[0]["name"]      # doctest: +SKIP
        'Conv_0/kernel'
    """
    specs, paths = manifest_files(model_dir, read_model_json(model_dir))
    stream = ShardStream(paths)
    for spec, offset, _ in weight_entries(specs):
        yield spec, offset, stream


def load_weight(spec: dict, offset: int, stream: ShardStream) -> np.ndarray:
    """A weight's values as float32, dequantized like tfjs (``q * scale + min``).

    Example:
        >>> spec = {"name": "w", "shape": [2], "dtype": "float32"}     # doctest: +SKIP
    """
    return decode_weight(spec, stream.read(offset, stored_nbytes(spec))).astype(np.float32)


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
