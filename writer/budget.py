"""The output budget: before a shard is written, what the conversion will write is checked against
the bytes really stored in its input and against the free space of the output's file system.

* A model may write at most :data:`RATIO` times the bytes its checkpoint stores, plus
  :data:`ALLOWANCE` (over all tensors together). Trained weights compress by less than 2x and
  bfloat16 widens 2x into float32, so real checkpoints sit far below; a few KB of Orbax metadata
  claiming gigabytes of absent (fill-value) chunks, or an ``.npz`` of deflated zeros, do not.
  ``--allow-sparse`` (``allow_sparse=True``) lifts the rule for legitimately sparse checkpoints.
* The free space of the output's file system must hold the weights plus a margin for
  ``model.json``, or the run stops with ``DISK_FULL`` before writing anything.

Models given as Python objects (module + variables in memory) have no stored input: only the free
space is checked.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

from topology.graph import WeightBinding
from topology.vocabulary.errors import ConversionError
from writer.quantize import QuantizeOptions, stored_itemsize
from writer.regular_files import regular_bytes

RATIO = 100
ALLOWANCE = 16 << 20  # small models and synthesised constants (e.g. folded BatchNorms) always fit
MODEL_JSON_MARGIN = 64 << 10  # room asked for model.json beside the weights, plus ~512 bytes per weight
_SHOWN = 3  # the largest tensors named in the error


def input_bytes(path: Path | None) -> int | None:
    """Bytes of the regular files of a checkpoint file or folder (None: no file, e.g. a model in memory).

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "a").write_bytes(b"12345")
        >>> input_bytes(d), input_bytes(d / "a"), input_bytes(None)
        (5, 5, None)
    """
    if path is None or not path.exists():
        return None
    if not path.is_dir():
        return path.stat().st_size
    return regular_bytes(path)


def check_output_budget(bindings: list[tuple[str, WeightBinding]], quantization: QuantizeOptions,
                        stored: int | None, allow_sparse: bool = False) -> int:
    """The weight bytes the conversion will write; ``OUTPUT_BUDGET`` if above the budget of ``stored``.

    Example:
        >>> import numpy as np
        >>> big = [("d/kernel", WeightBinding("kernel", (100_000_000, 16), constant=np.zeros(1)))]
        >>> check_output_budget(big, QuantizeOptions(), 2_412)      # doctest: +ELLIPSIS
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: OUTPUT_BUDGET: the model would write 6,400,000,000 bytes ...
        >>> check_output_budget(big, QuantizeOptions(), 2_412, allow_sparse=True)
        6400000000
    """
    sizes = [(math.prod(b.shape) * stored_itemsize(quantization.dtype if quantization.applies_to(n) else None), n, b)
             for n, b in bindings]
    total = sum(size for size, _, _ in sizes)
    if stored is None or allow_sparse:
        return total
    limit = RATIO * stored + ALLOWANCE
    if total > limit:
        worst = sorted(sizes, key=lambda s: -s[0])[:_SHOWN]
        named = ", ".join(f"{name} {tuple(b.shape)} ({size:,} bytes)" for size, name, b in worst)
        raise ConversionError(
            "OUTPUT_BUDGET",
            f"the model would write {total:,} bytes of weights from an input that stores {stored:,} bytes "
            f"(the limit is {RATIO}x the input + {ALLOWANCE >> 20} MiB = {limit:,} bytes); largest: {named}",
            "the checkpoint claims far more values than its files hold (absent chunks read as the fill value, "
            "or compressed runs of zeros): it is forged or damaged. If it is legitimately sparse, pass "
            "--allow-sparse (allow_sparse=True)",
        )
    return total


def check_free_space(out_dir: Path, weight_bytes: int, weights: int) -> None:
    """``DISK_FULL`` up front when the output's file system cannot hold the weights and model.json.

    Example:
        >>> check_free_space(Path("/tmp/x/out"), 1 << 62, 1)      # doctest: +ELLIPSIS
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: DISK_FULL: writing /tmp/x/out needs about ...
    """
    existing = out_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return  # cannot tell: the write itself reports a full disk (DISK_FULL) and cleans up
    needed = weight_bytes + MODEL_JSON_MARGIN + 512 * weights  # model.json: ~270 bytes per weight measured
    if needed > free:
        raise ConversionError(
            "DISK_FULL",
            f"writing {out_dir} needs about {needed:,} bytes but its file system has {free:,} bytes free",
            "free some disk space (or write to another disk) and convert again; nothing was written",
        )
