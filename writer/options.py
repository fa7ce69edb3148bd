"""Every option of a conversion, checked: :class:`ConvertOptions` (the CLI flags, by the same names).

The options say what the user gave; what is made of them (the input shapes and dtypes the model
gets, the fixes) is decided by the fit stage (:mod:`writer.fit`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from topology.trace.call_spec import CallSpec, as_call_spec
from topology.vocabulary.errors import ConversionError
from writer.provenance import check_metadata
from writer.quantize import QUANTIZE_DTYPES
from writer.shards import DEFAULT_SHARD_BYTES


INPUT_DTYPES = ("float32", "int32")  # model inputs: values, or token ids
MIN_SHARD_BYTES = 4096  # a shard per 1 byte made a file per byte; 4 KiB is one file-system block
FORMATS = ("layers-model", "graph-model", "auto")  # what is written (docs/graph-model.md)


@dataclass(frozen=True)
class ConvertOptions:
    """Every option of a conversion (the CLI flags, by the same names).

    Example:
        >>> ConvertOptions(quantize="uint8").weight_shard_size_bytes
        4194304
    """

    input_shape: Any = None  # a shape (28, 28, 1), or a list of shapes for several inputs
    # "float32" | "int32", or one per input. None: float32, or int32 token ids where an nn.Embed reads the
    # input (fixed[INPUT_DTYPE]); a dtype given is never replaced.
    input_dtype: Any = None
    module: Any = None  # model code: "file.py:Name", "pkg.mod:Name", or a module/class object
    call: Any = None  # how the module is called: --call text ("encode(*, train=False)"), a CallSpec, or None
    activation: str = "relu"
    pool: str = "avg"
    quantize: str | None = None
    quantize_weights: tuple[str, ...] = ()
    weight_shard_size_bytes: int = DEFAULT_SHARD_BYTES
    metadata: dict = field(default_factory=dict)
    force: bool = False
    step: int | None = None
    allow_nonfinite: bool = False
    allow_sparse: bool = False  # lift the output budget (writer/budget.py) for legitimately sparse checkpoints
    fix: bool = True  # automatic fixes of keys, shapes, dtypes and the input shape (--no-fix: off)
    full_hash: bool = False  # provenance: the full sha256 of checkpoints over 64 MiB too (else a sampled fingerprint)
    optimize: bool = True  # exact graph rewrites (topology/optimize/): fold BatchNorm, drop identities, ...
    preset: dict | None = None  # --preset applied: {"name", "set": {option: value}, "overridden": [option]}
    format: str = "layers-model"  # "layers-model" | "graph-model" (any JAX ops, from the jaxpr) | "auto"

    def call_spec(self) -> CallSpec:
        """``call`` as a CallSpec (BAD_CALL_SPEC for text that is not a call)."""
        return as_call_spec(self.call)

    def check(self) -> None:
        if self.format not in FORMATS:
            raise ConversionError("BAD_OPTION", f"--format {self.format}", f"choose one of {', '.join(FORMATS)}")
        if self.call is not None and self.module is None and not isinstance(self.call, CallSpec):
            self.call_spec()  # parse errors first; whether a module is needed is decided by the source
        if self.quantize is not None and self.quantize not in QUANTIZE_DTYPES:
            raise ConversionError("BAD_OPTION", f"--quantize {self.quantize}", f"choose one of {', '.join(QUANTIZE_DTYPES)}")
        if self.quantize_weights and self.quantize is None:
            raise ConversionError("BAD_OPTION", "--quantize-weights needs --quantize", "add e.g. --quantize uint8")
        if self.weight_shard_size_bytes < MIN_SHARD_BYTES:
            raise ConversionError(
                "BAD_OPTION", f"--weight-shard-size-bytes {self.weight_shard_size_bytes} is below the minimum of "
                f"{MIN_SHARD_BYTES} bytes (smaller shards would write one file per few bytes)",
                "use at least 4096, e.g. 4194304 (4 MiB, the default)")
        check_metadata(self.metadata)
        for shape in self.input_shapes():
            if shape and min(shape) < 1:  # () is a per-example scalar input
                raise ConversionError("BAD_OPTION", f"input shape {shape}", "give positive sizes without the batch axis, e.g. 28,28,1")
        for dtype in self.input_dtypes(max(1, len(self.input_shapes()))):
            if dtype not in INPUT_DTYPES:
                raise ConversionError("BAD_OPTION", f"--input-dtype {dtype}", f"choose {' or '.join(INPUT_DTYPES)}")

    def input_shapes(self) -> list[tuple[int, ...]]:
        """Every input shape given (empty when none was)."""
        if self.input_shape is None:
            return []
        shape = list(self.input_shape)
        if not shape:  # () or "": one number per example (a length, a scalar feature), given explicitly
            return [()]
        if shape and all(isinstance(d, (int, np.integer)) for d in shape):
            return [tuple(int(d) for d in shape)]
        return [tuple(int(d) for d in s) for s in shape]

    def input_dtypes(self, count: int) -> list[str]:
        if self.input_dtype is None:
            return ["float32"] * count
        dtypes = [self.input_dtype] * count if isinstance(self.input_dtype, str) else list(self.input_dtype)
        if len(dtypes) == 1 and count > 1:
            dtypes *= count
        if len(dtypes) != count:
            raise ConversionError("BAD_OPTION", f"{len(dtypes)} input dtypes for {count} inputs", "give one per --input-shape")
        return [str(d) for d in dtypes]
