"""Stream a graph's weights into shards: load one tensor, convert, quantize, write, drop.

Peak memory is one tensor (plus its quantized copy), whatever the model size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from topology.graph import WeightBinding
from writer.errors import ConversionError, Notices
from writer.quantize import QuantizeOptions, quantize, stored_itemsize
from writer.shards import ShardWriter

Progress = Callable[[str, int], None]  # (weight name, bytes written so far)


@dataclass
class WrittenWeights:
    """The manifest group and what was written.

    Example:
        >>> WrittenWeights({"paths": ["a.bin"], "weights": []}, 0, 0).files
        ['a.bin']
    """

    manifest_group: dict
    total_bytes: int
    quantized: int  # how many weights were quantized

    @property
    def files(self) -> list[str]:
        return list(self.manifest_group["paths"])


def write_weights(
    bindings: list[tuple[str, WeightBinding]],
    folder: Path,
    shard_bytes: int,
    quantization: QuantizeOptions,
    notices: Notices,
    allow_nonfinite: bool = False,
    progress: Progress | None = None,
) -> WrittenWeights:
    """Write every weight in order into ``folder`` and return the manifest group.

    Example:
        >>> import tempfile
        >>> b = [("d/bias", WeightBinding("bias", (2,), constant=np.ones(2, "float32")))]
        >>> w = write_weights(b, Path(tempfile.mkdtemp()), 1024, QuantizeOptions(), Notices())
        >>> w.manifest_group["weights"][0]
        {'name': 'd/bias', 'shape': [2], 'dtype': 'float32'}
    """
    plan = _plan(bindings, quantization)
    total = planned_bytes(bindings, quantization)
    specs = []
    converted: set[str] = set()
    with ShardWriter(folder, total, shard_bytes) as shards:
        for name, binding, qdtype in plan:
            values = to_float32(binding.materialize(), binding.origin, converted, notices, allow_nonfinite)
            spec = {"name": name, "shape": list(binding.shape), "dtype": "float32"}
            if qdtype is not None:
                values, spec["quantization"] = quantize(values, qdtype)
            shards.write(np.ascontiguousarray(values).data)
            specs.append(spec)
            del values
            if progress is not None:
                progress(name, shards.written)
    quantized = sum(1 for _, _, q in plan if q is not None)
    return WrittenWeights({"paths": shards.names, "weights": specs}, total, quantized)


def _plan(bindings: list[tuple[str, WeightBinding]], quantization: QuantizeOptions) -> list:
    return [(name, binding, quantization.dtype if quantization.applies_to(name) else None) for name, binding in bindings]


def planned_bytes(bindings: list[tuple[str, WeightBinding]], quantization: QuantizeOptions) -> int:
    """The bytes :func:`write_weights` will write for ``bindings`` (known before reading any weight).

    Example:
        >>> planned_bytes([("d/bias", WeightBinding("bias", (2,), constant=np.ones(2, "float32")))], QuantizeOptions("uint8"))
        2
    """
    return sum(int(np.prod(b.shape, dtype=np.int64)) * stored_itemsize(q) for _, b, q in _plan(bindings, quantization))


def to_float32(values: np.ndarray, origin: str, converted: set[str], notices: Notices, allow_nonfinite: bool) -> np.ndarray:
    """Little-endian float32 values, refusing NaN/Inf unless allowed.

    Other dtypes follow the rules of :mod:`writer.fixes.dtypes` (floats cast,
    int64 range-checked, integers and bools converted only when exact), each
    source dtype reported once as ``fixed[DTYPE_CONVERTED]``.

    Example:
        >>> to_float32(np.ones(2, np.float64), "params/d/bias", set(), Notices(), False).dtype
        dtype('float32')
    """
    from writer.fixes.dtypes import convert

    values = convert(values, origin, converted, notices)
    if not allow_nonfinite:
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise ConversionError(
                "NONFINITE_WEIGHT", f"{origin} has {bad} NaN/Inf value(s) out of {values.size}",
                "the training diverged or the file is damaged; pass --allow-nonfinite to write them anyway",
            )
    return values
