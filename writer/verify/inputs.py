"""The inputs verify feeds both models: an .npz file's ``x`` / ``y`` arrays, or seeded random values."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from topology.graph import InputSpec
from topology.vocabulary.errors import ConversionError, Notices
from writer.term import shape_text


def load_data(path: str | Path, inputs: list[InputSpec], limit: int | None, notices: Notices
              ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """``x`` (or ``x0``, ``x1``, ... for several inputs) and optional ``y`` labels from an .npz.

    Arrays whose per-sample size matches the model input are reshaped (e.g. (n, 28, 28) for
    (28, 28, 1)); one-hot ``y`` becomes class indices.

    Example:
        >>> xs, y = load_data("mnist_test.npz", [InputSpec("input", (28, 28, 1))], None, Notices())  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError("DATA_NOT_FOUND", f"no data file at {path}",
                              "give an .npz with arrays x (inputs) and optionally y (labels)")
    try:
        archive = np.load(path, allow_pickle=False)
        keys = set(archive.files)
    except (OSError, ValueError) as exc:
        raise ConversionError("DATA_INVALID", f"{path} is not an .npz archive ({exc})",
                              "write it with numpy.savez(path, x=inputs, y=labels)") from None
    with archive:
        wanted = ["x"] if len(inputs) == 1 and "x" in keys else [f"x{i}" for i in range(len(inputs))]
        absent = [k for k in wanted if k not in keys]
        if absent:
            raise ConversionError("DATA_INVALID", f"{path} has arrays {sorted(keys)} but no {', '.join(absent)}",
                                  "store the inputs as x (or x0, x1, ... for a model with several inputs)")
        try:
            xs = [archive[k] for k in wanted]
            y = archive["y"] if "y" in keys else None
        except ValueError as exc:  # object arrays would need pickle
            raise ConversionError("DATA_INVALID", f"{path}: {exc}", "store plain numeric arrays") from None
    count = len(xs[0])
    for key, x, spec in zip(wanted, xs, inputs):
        if x.ndim == 0 or len(x) != count:
            raise ConversionError("DATA_INVALID", f"{path}: {key} has shape {x.shape}; every x needs the same "
                                  f"number of samples ({count})", "put samples on the first axis")
        if x.dtype.kind not in "fiub":
            raise ConversionError("DATA_INVALID", f"{path}: {key} has dtype {x.dtype}", "store numbers")
    fixed = []
    for key, x, spec in zip(wanted, xs, inputs):
        if tuple(x.shape[1:]) != tuple(spec.shape):
            if int(np.prod(x.shape[1:])) != int(np.prod(spec.shape)):
                raise ConversionError(
                    "DATA_SHAPE_MISMATCH", f"{path}: {key} holds samples of shape {shape_text(x.shape[1:])} "
                    f"but the model input {spec.name} is {shape_text(spec.shape)}",
                    "store x as (samples, *input shape)")
            notices.fixed("DATA_RESHAPED", f"{key} {shape_text(x.shape)} was reshaped to "
                                           f"{shape_text((len(x), *spec.shape))} to fit the model input")
            x = x.reshape((len(x), *spec.shape))
        fixed.append(x.astype(np.float32 if spec.dtype == "float32" else np.int32))
    if y is not None:
        if len(y) != count:
            raise ConversionError("DATA_INVALID", f"{path}: y has {len(y)} labels for {count} samples",
                                  "give one label per sample")
        if y.ndim == 2 and y.shape[1] > 1:
            y = np.argmax(y, axis=1)  # one-hot
        y = y.reshape(count)
        if y.dtype.kind not in "iub" and not np.all(np.equal(np.mod(y, 1), 0)):
            raise ConversionError("DATA_INVALID", f"{path}: y holds non-integer labels",
                                  "store class indices (or one-hot rows)")
        y = y.astype(np.int64)
    if limit is not None:
        fixed = [x[:limit] for x in fixed]
        y = None if y is None else y[:limit]
    if not len(fixed[0]):
        raise ConversionError("DATA_INVALID", f"{path}: no samples", "store at least one sample")
    return fixed, y


def random_inputs(inputs: list[InputSpec], count: int, seed: int, document: dict) -> list[np.ndarray]:
    """Seeded inputs: floats uniform in [-1, 1), token ids within the smallest Embedding's vocabulary.

    Example:
        >>> random_inputs([InputSpec("input", (3,))], 2, 0, {})[0].shape
        (2, 3)
    """
    rng = np.random.default_rng(seed)
    vocab = _smallest_vocabulary(document)
    out = []
    for spec in inputs:
        if spec.dtype == "int32":
            out.append(rng.integers(0, vocab, (count, *spec.shape), dtype=np.int32))
        else:
            out.append(rng.uniform(-1.0, 1.0, (count, *spec.shape)).astype(np.float32))
    return out


def _smallest_vocabulary(document: dict) -> int:
    sizes = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == "Embedding" and isinstance(node.get("config"), dict):
                sizes.append(int(node["config"].get("input_dim", 2)))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document.get("modelTopology", {}))
    return max(1, min(sizes)) if sizes else 2

