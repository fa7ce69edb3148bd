"""What each stored dtype is written as: float32, the dtype of tfjs layer weights, exactly, or refused.

One rule per kind of dtype (declared in :data:`RULES`): floats (float64,
float16, bfloat16, float8) are cast, and float64 values beyond float32's range
are refused; integers (int64 is range-checked to int32) and bools become float32
only when every value is exact in float32 (|x| <= 2**24). The fit stage decides a
:class:`DtypePolicy` from the fitted variables (:func:`writer.fixes.dtypes.decide_dtype_policy`:
with fixes off it refuses every weight that is not float32, before anything is
read); the write stage applies it as it streams the weights, reporting each source
dtype once as ``fixed[DTYPE_CONVERTED]`` (the fix declared in :mod:`writer.fixes.dtypes`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

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


@dataclass(frozen=True)
class DtypePolicy:
    """What each stored dtype is written as, decided once in the fit stage; the write stage applies it.

    ``written_as`` maps every dtype of the fitted variables (as stored: ``bfloat16`` even when the
    reader widened it) to the rule converting it to float32, None when it is float32 already or not
    a number (refused with UNSUPPORTED_DTYPE when such a weight is written). Weights of another dtype
    (constants the graph stage computes, a live NNX module's own arrays) follow :data:`RULES`.

    Example:
        >>> policy = DtypePolicy.for_dtypes(["float32", "bfloat16", "int64"])
        >>> policy.describe()
        {'bfloat16': 'float', 'float32': 'as is', 'int64': 'integer'}
        >>> n = Notices(); policy.apply(np.array([1, 2], np.int64), "params/d/bias", set(), n).tolist()
        [1.0, 2.0]
        >>> n.items[0].code
        'DTYPE_CONVERTED'
    """

    written_as: dict[str, DtypeRule | None] = field(default_factory=dict)

    @classmethod
    def for_dtypes(cls, dtypes: Iterable[np.dtype | str]) -> "DtypePolicy":
        """The policy for weights stored as ``dtypes`` (numpy dtypes, or names such as ``"bfloat16"``)."""
        named = {(d if isinstance(d, str) else np.dtype(d).name): d for d in dtypes}
        return cls({name: _rule_of(named[name]) for name in sorted(named)})

    def rule(self, dtype: np.dtype) -> DtypeRule | None:
        """The rule converting ``dtype`` to float32 (None: not a number)."""
        return self.written_as[dtype.name] if dtype.name in self.written_as else rule_for(dtype)

    def describe(self) -> dict[str, str]:
        """``{stored dtype: rule kind}``, ``"as is"`` for float32, ``"refused"`` for what is not a number."""
        return {name: "as is" if name == "float32" else rule.kind if rule is not None else "refused"
                for name, rule in self.written_as.items()}

    def apply(self, values: np.ndarray, origin: str, converted: set[str], notices: Notices,
              stored: str = "") -> np.ndarray:
        """``values`` as little-endian float32, checked by the dtype's rule and reported once per dtype.

        ``stored`` names the checkpoint's dtype when the reader already widened it (bfloat16 is
        loaded as float32 by bit shifts, without ml_dtypes); it is reported the same way.
        """
        dtype = np.dtype(values.dtype)
        if stored and stored != dtype.name:  # widened by the reader: a float
            _report(stored, origin, converted, notices, self.written_as.get(stored) or RULES[0])
        if dtype == FLOAT32:
            return values
        rule = self.rule(dtype)
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


def _rule_of(dtype: np.dtype | str) -> DtypeRule | None:
    try:
        return rule_for(np.dtype(dtype))
    except TypeError:  # a stored dtype numpy cannot name (bfloat16, widened by the reader without ml_dtypes)
        return RULES[0] if str(dtype).startswith(("bfloat", "float")) else None


def _report(name: str, origin: str, converted: set[str], notices: Notices, rule: DtypeRule) -> None:
    if name not in converted:
        converted.add(name)
        notices.fixed("DTYPE_CONVERTED", f"{name} weights (first: {origin}) were converted to float32{rule.note}")
