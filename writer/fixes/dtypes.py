"""Dtype fixes: tfjs layer weights are float32, and model inputs read by an embedding are int32 ids.

The conversion rules of every number type to float32 are :mod:`writer.weight_dtypes`'. The fit stage
decides once, from the fitted variables, what each stored dtype is written as
(:func:`decide_dtype_policy`: a :class:`~writer.weight_dtypes.DtypePolicy`, which the write stage
applies, reporting each source dtype converted as ``fixed[DTYPE_CONVERTED]``, declared here). With
fixes off, :func:`refuse_unless_float32` refuses such weights up front (also while the fit stage tries
inputs, so that the refusal is the first error, as the user expects).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from topology.vocabulary.errors import Notices
from writer.fixes.base import FixFamily, apply
from topology.vocabulary.tensors import TensorRef, path_str
from writer.weight_dtypes import FLOAT32, DtypePolicy

DTYPES = FixFamily("dtypes")
DTYPE_CONVERTED = DTYPES.fixed(
    "DTYPE_CONVERTED", "float64, float16, bfloat16, integer (int64 range-checked to int32) and bool weights "
    "were converted to float32, the dtype of tfjs layer weights",
    "cast the weights to float32 before saving",
)
INPUT_DTYPE = DTYPES.fixed(
    "INPUT_DTYPE", "a float input of a model whose first layer is an embedding becomes int32 token ids",
    "pass --input-dtype int32")


def refuse_unless_float32(refs: Iterable[TensorRef], source: str, notices: Notices, enabled: bool) -> None:
    """With fixes off (``--no-fix``), refuse weights that are not float32 (nothing is read).

    Example:
        >>> refuse_unless_float32([TensorRef(("w",), (2,), np.dtype("float32"), None)], "ck", Notices(), False)
    """
    if enabled:
        return
    for ref in refs:
        if ref.stored_dtype or np.dtype(ref.dtype).newbyteorder("<") != FLOAT32:
            apply(DTYPE_CONVERTED, f"{source}: {path_str(ref.path)} is {ref.dtype_name}, not float32",
                  notices, enabled)


def decide_dtype_policy(refs: Iterable[TensorRef], source: str, notices: Notices, enabled: bool) -> DtypePolicy:
    """What each dtype of ``refs`` (the fitted variables) is written as; with fixes off (``--no-fix``)
    a weight that is not float32 is refused here (FIX_DISABLED), before anything is written.

    Example:
        >>> ref = TensorRef(("w",), (2,), np.dtype("float64"), None)
        >>> decide_dtype_policy([ref], "ck", Notices(), True).describe()
        {'float64': 'float'}
    """
    refs = list(refs)
    refuse_unless_float32(refs, source, notices, enabled)
    dtypes: set = set()
    for ref in refs:
        dtypes.add(ref.dtype)
        if ref.stored_dtype:
            dtypes.add(ref.stored_dtype)
    return DtypePolicy.for_dtypes(dtypes)
