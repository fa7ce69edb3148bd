"""The options of ``verify`` (the CLI flags, by the same names) and their checks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topology.vocabulary.errors import ConversionError
from writer.tfjs_node import BACKENDS  # the backends the Node runner offers (also the CLI's --backend choices)

# Relative tolerance by the strongest quantization in the model (None = float32 weights).
DEFAULT_TOLERANCE = {None: 1e-4, "uint16": 1e-2, "float16": 1e-2, "uint8": 5e-2}


@dataclass(frozen=True)
class VerifyOptions:
    """Options of :func:`verify` (the CLI flags, by the same names).

    ``tolerance`` is relative: the check passes when ``max_abs_error <=
    tolerance * max(1, max|reference|)``. ``None`` picks it from the model's
    quantization (1e-4 for float32 weights, 1e-2 float16/uint16, 5e-2 uint8).

    Example:
        >>> VerifyOptions(samples=8).backend
        'wasm'
    """

    module: Any = None
    call: Any = None  # how the module is called (--call text or a CallSpec), as for the conversion
    input_shape: Any = None  # checked against model.json when given
    input_dtype: Any = None  # "float32" | "int32", or one per input: checked against model.json when given
    activation: str = "relu"
    pool: str = "avg"
    step: int | None = None
    data: str | Path | None = None
    samples: int | None = None  # random inputs: how many (default 64); data: the first N
    seed: int = 0
    backend: str = "wasm"  # tfjs's fast CPU backend; "cpu" is the plain-JS one
    tolerance: float | None = None
    repeat: int = 20  # batch-1 predictions timed for the latency
    batch_size: int = 256
    timeout: float = 600.0
    fix: bool = True  # the conversion's automatic fixes, as convert --no-fix turns them off


def check_options(options: VerifyOptions) -> None:
    """Refuse option values verify cannot run with (``BAD_OPTION``).

    Example:
        >>> check_options(VerifyOptions(backend="webgl"))
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: BAD_OPTION: --backend webgl
    """
    if options.backend not in BACKENDS:
        raise ConversionError("BAD_OPTION", f"--backend {options.backend}", "choose cpu or wasm")
    if options.tolerance is not None and not options.tolerance >= 0:
        raise ConversionError("BAD_OPTION", f"--tolerance {options.tolerance}", "give a non-negative number, e.g. 1e-4")
    if options.samples is not None and options.samples < 1:
        raise ConversionError("BAD_OPTION", f"--samples {options.samples}", "give a positive number of samples")
    if options.repeat < 1 or options.batch_size < 1:
        raise ConversionError("BAD_OPTION", "--repeat and --batch-size must be positive", "e.g. --repeat 20")

