"""How a weight of any number type becomes float32, the dtype of tfjs layer weights: exactly, or refused.

One rule per kind of dtype (declared in :data:`RULES`): floats (float64,
float16, bfloat16, float8) are cast, and float64 values beyond float32's range
are refused; integers (int64 is range-checked to int32) and bools become float32
only when every value is exact in float32 (|x| <= 2**24). Each source dtype is
reported once as ``fixed[DTYPE_CONVERTED]`` (the fix declared in
:mod:`writer.fixes.dtypes`). The write stage applies these rules as it streams
the weights; with fixes off, the fit stage has refused every weight that is not
float32 before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from topology.vocabulary.errors import ConversionError, Notices

FLOAT32 = np.dtype("<f4")
EXACT_INT = 2 ** 24  # the largest integer range float32 holds exactly
INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class DtypeRule:
    """How one kind of dtype becomes float32.

    Example:
        >>> rule_for(np.dtype("int64")).kind
        'integer'
    """

    kind: str
    matches: Callable[[np.dtype], bool]
    check: Callable[[np.ndarray, np.ndarray, str], None]  # (values, as float32, origin): VALUE_OUT_OF_RANGE
    note: str  # appended to the fixed[DTYPE_CONVERTED] message


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype.name.startswith(("bfloat", "float8", "float6", "float4"))


def _check_float(values: np.ndarray, out: np.ndarray, origin: str) -> None:
    if values.dtype.itemsize <= 4 or values.size == 0:
        return
    # Values that became Inf only by the cast were finite but too large for float32.
    if np.any(np.isinf(out) & ~np.isinf(values)):
        raise ConversionError(
            "VALUE_OUT_OF_RANGE", f"{origin} holds values beyond float32's range (|x| > 3.4e38)",
            "rescale the weights; tfjs computes in float32",
        )


def _check_int(values: np.ndarray, out: np.ndarray, origin: str) -> None:
    if values.size == 0:
        return
    low, high = int(values.min()), int(values.max())
    if values.dtype.itemsize > 4 and (low < INT32.min or high > INT32.max):
        raise ConversionError(
            "VALUE_OUT_OF_RANGE",
            f"{origin} is {values.dtype.name} with values in [{low}, {high}], outside int32's range",
            "store integer weights that fit int32 (tfjs has no 64-bit integers)",
        )
    if max(abs(low), abs(high)) > EXACT_INT:
        raise ConversionError(
            "VALUE_OUT_OF_RANGE",
            f"{origin} is {values.dtype.name} with values up to {max(abs(low), abs(high))}, which float32 "
            f"(tfjs's weight dtype) cannot hold exactly beyond 2**24 = {EXACT_INT}",
            "store these weights as float32 yourself if rounding is acceptable",
        )


RULES = (
    DtypeRule("float", _is_float, _check_float, ""),
    DtypeRule("integer", lambda d: d.kind in "iu", _check_int, " (range-checked: every value is exact in float32)"),
    DtypeRule("bool", lambda d: d.kind == "b", lambda v, out, o: None, " (False -> 0.0, True -> 1.0)"),
)


def rule_for(dtype: np.dtype) -> DtypeRule | None:
    """The rule converting ``dtype``, or None when it is not a number.

    Example:
        >>> rule_for(np.dtype("U3")) is None
        True
    """
    return next((rule for rule in RULES if rule.matches(np.dtype(dtype))), None)


def convert(values: np.ndarray, origin: str, converted: set[str], notices: Notices, stored: str = "") -> np.ndarray:
    """``values`` as little-endian float32, checked by the dtype's rule and reported once per dtype.

    Example:
        >>> n = Notices(); convert(np.array([1, 2], np.int64), "params/d/bias", set(), n).tolist()
        [1.0, 2.0]
        >>> n.items[0].code
        'DTYPE_CONVERTED'

    ``stored`` names the checkpoint's dtype when the reader already widened it (bfloat16 is
    loaded as float32 by bit shifts, without ml_dtypes); it is reported the same way.
    """
    dtype = np.dtype(values.dtype)
    if stored and stored != dtype.name:
        _report(stored, origin, converted, notices, RULES[0])
    if dtype == FLOAT32:
        return values
    rule = rule_for(dtype)
    if rule is None:
        raise ConversionError(
            "UNSUPPORTED_DTYPE", f"{origin} has dtype {dtype}, which is not a number",
            "store real-valued parameters (float32, float16, bfloat16, float64)",
        )
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(FLOAT32)
    rule.check(values, out, origin)
    if dtype.newbyteorder("<") != FLOAT32:
        _report(dtype.name, origin, converted, notices, rule)
    return out


def _report(name: str, origin: str, converted: set[str], notices: Notices, rule: DtypeRule) -> None:
    if name not in converted:
        converted.add(name)
        notices.fixed("DTYPE_CONVERTED", f"{name} weights (first: {origin}) were converted to float32{rule.note}")
