"""Fit a checkpoint to the model code it is converted with: names, layouts, dtypes and the input.

:func:`fit_module` binds every variable the module expects (``jax.eval_shape``
of ``init`` for Linen, the live state for NNX) to a checkpoint tensor,
repairing names and layouts; when the input given (or none) does not fit, it
tries the shapes the parameters suggest, and int32 ids when an embedding reads
a float input. Each try is a plain result (:class:`~writer.fit.candidates.Found`
or :class:`~writer.fit.candidates.Rejected`); the rejection left at the end is
raised as it is. Every repair is reported as ``fixed[CODE]``; with fixes off,
refused with FIX_DISABLED instead.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from topology.graph import InputSpec
from topology.infer import TemplateOptions
from topology.trace import is_nnx_module
from topology.trace.signature import supplied_notice
from topology.vocabulary.errors import ConversionError, Notices
from topology.vocabulary.misfit import Misfit
from topology.vocabulary.variables import Variables
from writer.fit.candidates import (MAX_CANDIDATES, Found, Rejected, changes, fan_in_candidates, fan_ins,
                                   shape_text)
from writer.fit.template import try_template
from writer.fixes.base import apply, listing
from writer.fixes.dtypes import INPUT_DTYPE, refuse_unless_float32
from writer.fixes.expected import linen_applies, linen_expected, nnx_check_inputs, nnx_expected
from writer.fixes.keys import match_layers
from writer.fixes.shapes import INPUT_SHAPE_CORRECTED, compatible, fit_chain, fit_shapes

if TYPE_CHECKING:
    from writer.sources import Source


def fit_module(source: "Source", inputs: list[InputSpec] | None, notices: Notices, solved: bool = False, *,
               enabled: bool = True, input_dtype: str | None = "float32",
               dtype_given: bool = False) -> tuple[Variables, list[InputSpec]]:
    """The checkpoint's variables as ``source.module`` expects them, and inputs it can take.

    ``inputs`` are the user's (``solved=False``), or were solved from the parameters by the
    template (``solved=True``), or are None when neither gave any. ``enabled`` is ``--fix`` (off:
    every repair is FIX_DISABLED instead); ``input_dtype`` is the dtype of an input the parameters
    solve when ``inputs`` is None (the first ``--input-dtype``). ``dtype_given``: the user chose the
    dtypes (``--input-dtype``), which are then never replaced: float ids for an nn.Embed are
    INPUT_DTYPE_MISMATCH instead of fixed[INPUT_DTYPE]. Fixed rng arguments are noted.

    Example:
        >>> variables, inputs = fit_module(source, None, Notices(), enabled=True)  # doctest: +SKIP
    """
    note = supplied_notice(source.module, source.call.method)
    if note:
        notices.assume("CALL_ARGUMENTS", note)
    result = search(source, inputs, notices, solved, enabled, input_dtype)
    if isinstance(result, Rejected) and result.wants_integers and inputs and all(
            spec.dtype.startswith("float") for spec in inputs):
        if dtype_given:
            raise ConversionError(
                "INPUT_DTYPE_MISMATCH", f"--input-dtype {inputs[0].dtype} was given, but "
                f"{type(source.module).__name__} reads its input with an nn.Embed, which takes int32 token ids",
                "pass --input-dtype int32, or leave --input-dtype out to have it chosen")
        ids = [dataclasses.replace(spec, dtype="int32") for spec in inputs]
        heard = Notices()  # reported after the dtype fix that made them possible
        result = search(source, ids, heard, solved, enabled, input_dtype)
        if isinstance(result, Rejected):
            raise result.error
        apply(INPUT_DTYPE, f"{type(source.module).__name__} takes token ids (an nn.Embed reads its input): "
                           f"input dtype {inputs[0].dtype} changed to int32", notices, enabled)
        notices.items.extend(heard.items)
    if isinstance(result, Rejected):
        raise result.error
    return result.variables, result.inputs


def search(source: "Source", inputs: list[InputSpec] | None, notices: Notices, solved: bool, enabled: bool,
           input_dtype: str | None) -> Found | Rejected:
    """The inputs given (or solved) if the checkpoint fits them, else the one closest input shape
    the parameters suggest; several closest, or none, are a rejection that says so. Only what is
    found is reported to ``notices``.

    Example:
        >>> search(source, None, Notices(), True, True, "float32").inputs   # doctest: +SKIP
        [InputSpec(name='input', shape=(784,), dtype='float32')]
    """
    if not source.variables.collections:  # a live NNX module carries its own variables
        if inputs is None:
            return Rejected(shape_required(source.name))
        if is_nnx_module(source.module):
            refused = _refusal(lambda: nnx_check_inputs(source.module, inputs, source.call))
            if refused is not None:
                return refused
        if solved:
            note_solved(inputs[0].shape, notices)
        return Found(source.variables, inputs)
    first: Rejected | None = None
    if inputs is not None:
        tried = plan(source, inputs, enabled)
        if isinstance(tried, Found):
            if solved:
                note_solved(inputs[0].shape, notices)
            notices.items.extend(tried.notices.items)
            return Found(tried.variables, inputs)
        if not tried.input_dependent or len(inputs) != 1:
            return tried
        first = tried
    dtype = inputs[0].dtype if inputs else input_dtype
    given = inputs[0].shape if inputs and not solved else None
    if given == () and first is not None:  # an explicit scalar per example is never replaced by a solved shape
        return Rejected(ConversionError(
            "INPUT_SHAPE_MISMATCH", f"{first.error.message}; --input-shape \"\" (one number per example) was given",
            "the parameters need an input with axes: give its shape (e.g. --input-shape 8), or leave --input-shape "
            "out to have it solved"))
    fits: list[tuple[tuple[int, ...], Found]] = []
    for shape in candidates(source, given):
        if inputs and shape == inputs[0].shape:
            continue  # already tried
        tried = plan(source, [InputSpec("input", shape, dtype)], enabled)
        if isinstance(tried, Found):
            fits.append((shape, tried))
    if not fits:
        if first is not None and not (solved and first.refused_by_model):
            return first
        return Rejected(shape_required(source.name, first.error if first else None))
    fewest = min(changes(given, shape) for shape, _ in fits)
    best = [(shape, tried) for shape, tried in fits if changes(given, shape) == fewest]
    if len(best) > 1:
        shown = listing([shape_text(shape) for shape, _ in best])
        return Rejected(ConversionError(
            "INPUT_SHAPE_MISMATCH" if given else "INPUT_SHAPE_REQUIRED",
            (f"{first.error.message}; " if given and first else f"the input shape of {source.name} is not "
             "fixed by its parameters; ") + f"input shapes that fit them: {shown}",
            "pass the one the model was trained on with --input-shape (without the batch axis)",
        ))
    shape, tried = best[0]
    if given is None:
        note_solved(shape, notices)
    else:
        apply(INPUT_SHAPE_CORRECTED, f"{first.error.message}; --input-shape {shape_text(given)} changed to "
                                     f"{shape_text(shape)}, which the parameters fit", notices, enabled)
    notices.items.extend(tried.notices.items)
    return Found(tried.variables, [InputSpec("input", shape, dtype)])


def note_solved(shape: tuple[int, ...], notices: Notices) -> None:
    """Report an input shape solved from the parameters.

    Example:
        >>> n = Notices(); note_solved((784,), n); n.items[0].code
        'INPUT_SHAPE'
    """
    notices.assume("INPUT_SHAPE", f"input shape {shape_text(shape)} solved from the parameter shapes "
                                  "(override with --input-shape)")


def plan(source: "Source", inputs: list[InputSpec], enabled: bool) -> Found | Rejected:
    """Expected variables -> matched tensors -> fixed shapes for ``inputs``, with the notices it
    would report; or why the checkpoint does not fit them.

    Example:
        >>> plan(source, [InputSpec("input", (784,))], True).variables   # doctest: +SKIP
    """
    try:
        return Found(*_bind(source, inputs, enabled))
    except ConversionError as err:  # the error's kind (Misfit or not) is read by the search, never its code
        return Rejected(err)


def _bind(source: "Source", inputs: list[InputSpec], enabled: bool) -> tuple[Variables, list[InputSpec], Notices]:
    notices = Notices()
    nnx = is_nnx_module(source.module)
    try:
        expected = nnx_expected(source.module) if nnx else linen_expected(source.module, inputs, source.call)
    except Misfit as err:
        # init may need what only training provides; if inference runs on the checkpoint as it is,
        # convert it as it is (no fixes can be found without the expected shapes).
        if err.refused_by == "model" and linen_applies(source.module, source.variables.collections, inputs,
                                                       source.call):
            return source.variables, inputs, notices
        raise
    matched = match_layers(
        expected, source.variables.collections, compatible, any_collection=nnx, model_order=not nnx,
        checkpoint_order=source.format != "orbax", source=source.name, notices=notices, enabled=enabled,
    )
    refs = fit_shapes(matched.pairs, source.name, notices, enabled)
    refuse_unless_float32(refs, source.name, notices, enabled)
    if nnx:
        nnx_check_inputs(source.module, inputs, source.call)
    collections: dict[str, dict] = {}
    for (leaf, _), ref in zip(matched.pairs, refs):
        collections.setdefault(leaf.collection, {})[leaf.path] = ref
    return Variables(collections), inputs, notices


def _refusal(check) -> Rejected | None:
    try:
        check()
    except ConversionError as err:
        return Rejected(err)
    return None


def candidates(source: "Source", given: tuple[int, ...] | None) -> list[tuple[int, ...]]:
    """Input shapes the parameters determine: the in-features of the first kernels put into the
    given shape (channels, flat size, a missing channel axis) or, when none was given, the template's
    solution. Sizes that pooling leaves undetermined are never proposed for a given shape.

    Example:
        >>> candidates(source, (20,))   # doctest: +SKIP
        [(784,), (20, 784)]
    """
    kernels = [ref for path, ref in source.variables.params.items()
               if path and path[-1] in ("kernel", "weight") and len(ref.shape) >= 2][:3]
    if given:
        return fan_in_candidates(given, kernels)[:MAX_CANDIDATES]
    shapes: list[tuple[int, ...]] = []
    chained = Variables({**source.variables.collections,
                         "params": fit_chain(source.variables.params, "", Notices(), True)})
    for variables in (source.variables, chained):
        for pool in ("avg", "none"):
            solved = try_template(variables, TemplateOptions(pool=pool))
            if isinstance(solved, tuple):
                shapes.append(solved)
    shapes += [(fan_in,) for kernel in kernels if len(kernel.shape) == 2 for fan_in in fan_ins(kernel)]
    return [s for s in dict.fromkeys(shapes) if s and min(s) > 0][:MAX_CANDIDATES]


def shape_required(name: str, tried: ConversionError | None = None) -> ConversionError:
    """INPUT_SHAPE_REQUIRED for ``name`` (``tried``: why the shape the template solved failed).

    Example:
        >>> shape_required("mlp.msgpack").code
        'INPUT_SHAPE_REQUIRED'
    """
    detail = f" (the shape the template solves does not work: {tried.message})" if tried is not None else ""
    return ConversionError(
        "INPUT_SHAPE_REQUIRED", f"the input shape of {name} cannot be read from its parameters{detail}",
        "pass --input-shape (without the batch axis), e.g. --input-shape 28,28,1",
    )
