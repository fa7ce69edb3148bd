"""The weight check: every weight's bytes in the shards against what the checkpoint says they must be,
so a damaged file is named precisely."""
from __future__ import annotations

import numpy as np

from topology.graph import LayerGraph
from topology.vocabulary.errors import Notices
from writer.quantize import quantize
from writer.tfjs_files import ShardStream, element_count, quantization_of, stored_dtype, weight_entries
from writer.verify.model_files import ModelFiles
from writer.verify.report import WeightMismatch
from writer.weights import to_float32


def check_weights(graph: LayerGraph, model: ModelFiles, strict: bool = True) -> tuple[int, list[WeightMismatch]]:
    """Compare every weight's bytes in the shards with what the checkpoint gives (one tensor at a time).

    Returns (weights checked, mismatches). ``strict=False`` compares only the
    weights both sides name (when model.json's topology is not ``graph``'s).

    Example:
        >>> checked, bad = check_weights(graph, read_model("out"))   # doctest: +SKIP
        >>> checked, bad                                             # doctest: +SKIP
        (8, [])
    """
    expected = dict(graph.weight_bindings())
    mismatches: list[WeightMismatch] = []
    stream = ShardStream(model.paths)
    checked = 0
    for spec, offset, nbytes in weight_entries(model.weights):
        name, shape = spec.get("name", "?"), tuple(spec.get("shape", ()))
        stored = stream.read(offset, nbytes)
        binding = expected.pop(name, None)
        if binding is None and not strict:
            continue
        checked += 1
        if binding is None:
            mismatches.append(WeightMismatch(name, "unexpected (the checkpoint has no such weight)"))
            continue
        if tuple(binding.shape) != shape:
            mismatches.append(WeightMismatch(name, f"shape {list(shape)} in the manifest, "
                                                   f"{list(binding.shape)} from the checkpoint"))
            continue
        if len(stored) < nbytes:
            mismatches.append(WeightMismatch(name, f"truncated: {len(stored)} of {nbytes} bytes in the shards"))
            continue
        values = to_float32(binding.materialize(), binding.origin, set(), Notices(), True)
        want = quantize(values, stored_dtype(spec))[0] if quantization_of(spec) else values
        if np.ascontiguousarray(want).tobytes() != stored:
            got = np.frombuffer(stored, dtype=np.dtype(want.dtype).newbyteorder("<")).reshape(want.shape)
            with np.errstate(all="ignore"):
                diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            finite = diff[np.isfinite(diff)]
            worst = float("inf") if finite.size < diff.size else float(finite.max()) if finite.size else 0.0
            mismatches.append(WeightMismatch(name, "differs", _count_differing(got, want), element_count(spec), worst))
        del values, want
    for name in expected if strict else ():
        mismatches.append(WeightMismatch(name, "missing from the manifest"))
    return checked, mismatches


def _count_differing(got: np.ndarray, want: np.ndarray) -> int:
    a = np.ascontiguousarray(got).view(np.uint8).reshape(got.size, -1)
    b = np.ascontiguousarray(want).view(np.uint8).reshape(want.size, -1)
    return int(np.count_nonzero((a != b).any(axis=1)))
