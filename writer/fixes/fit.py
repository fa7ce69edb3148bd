"""Fit a checkpoint to the model it is converted with: keys, shapes, dtypes and the input shape.

:func:`fit_module` (module tracing) binds every variable the module expects
(``jax.eval_shape`` of ``init`` for Linen, the live state for NNX) to a
checkpoint tensor, repairing names and layouts; when the input shape given
(or none) does not fit, it looks for the one the parameters fix.
:func:`fit_template` (no model code) repairs layouts along the template's
chain and a wrong ``--input-shape``. Both report every repair as
``fixed[CODE]`` and, with fixes off, refuse with FIX_DISABLED instead.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from topology.graph import InputSpec
from topology.infer import TemplateOptions, infer_graph
from topology.trace import is_nnx_module
from topology.trace.signature import supplied_notice
from topology.vocabulary.errors import ConversionError, Notices
from writer.fixes.base import FixFamily, apply, listing
from writer.fixes.dtypes import refuse_unless_float32
from writer.fixes.expected import linen_applies, linen_expected, nnx_check_inputs, nnx_expected
from writer.fixes.keys import match_layers
from writer.fixes.shapes import INPUT_SHAPE_CORRECTED, compatible, fit_chain, fit_shapes
from topology.vocabulary.variables import Variables

if TYPE_CHECKING:
    from writer.sources import Source

# Errors a different input shape may cure (Linen parameter shapes depend on it).
_INPUT_DEPENDENT = {"SHAPE_MISMATCH", "MISSING_PARAMETER", "INPUT_SHAPE_INVALID", "AMBIGUOUS_LAYER_MATCH"}
_MAX_CANDIDATES = 12


def fit_template(variables: Variables, template: "TemplateOptions", source: str, notices: Notices,
                 enabled: bool) -> tuple[Variables, "TemplateOptions"]:
    """Repair kernel layouts and a wrong input shape for the parameter-tree template.

    Example:
        >>> v, t = fit_template(variables, TemplateOptions((20,)), "mlp.msgpack", Notices(), True)  # doctest: +SKIP
        >>> t.input_shape                                                                            # doctest: +SKIP
        (784,)
    """
    params = fit_chain(variables.params, source, notices, enabled)
    variables = Variables({**variables.collections, "params": params}) if variables.collections else variables
    refuse_unless_float32(params.values(), source, notices, enabled)
    return variables, _fit_template_input(variables, template, notices, enabled)


def _fit_template_input(variables: Variables, template: "TemplateOptions", notices: Notices,
                        enabled: bool) -> "TemplateOptions":
    if template.input_shape is None:
        return template
    try:
        infer_graph(variables, template, Notices())
        return template
    except ConversionError as err:
        if err.code != "INPUT_SHAPE_MISMATCH":
            return template  # converting reports it
        mismatch = err
    given = tuple(template.input_shape)
    fits = []
    for shape in _fan_in_candidates(given, list(variables.params.values())):
        try:
            infer_graph(variables, dataclasses.replace(template, input_shape=shape), Notices())
        except ConversionError:
            continue
        fits.append(shape)
    closest = [s for s in fits if _changes(given, s) == min(_changes(given, f) for f in fits)]
    if len(closest) != 1:
        return template  # none, or not one: converting reports the mismatch
    apply(INPUT_SHAPE_CORRECTED, f"{mismatch.message}; --input-shape {_fmt(given)} changed to "
                                 f"{_fmt(closest[0])}, which the parameters fit", notices, enabled)
    return dataclasses.replace(template, input_shape=closest[0])


def fit_module(source: "Source", inputs: list[InputSpec] | None, notices: Notices, solved: bool = False, *,
               enabled: bool = True, input_dtype: str | None = "float32",
               dtype_given: bool = False) -> tuple[Variables, list[InputSpec]]:
    """:func:`_fit_module`, with fixed rng arguments noted and float ids of an nn.Embed made int32.

    ``enabled`` is ``--fix`` (off: every repair is FIX_DISABLED instead); ``input_dtype`` is
    the dtype of an input the parameters solve when ``inputs`` is None (the first ``--input-dtype``).
    ``dtype_given``: the user chose the dtypes (``--input-dtype``), which are then never replaced: float
    ids for an nn.Embed are INPUT_DTYPE_MISMATCH instead of fixed[INPUT_DTYPE].

    Example:
        >>> variables, inputs = fit_module(source, None, Notices(), enabled=True)  # doctest: +SKIP
    """
    note = supplied_notice(source.module, source.call.method)
    if note:
        notices.assume("CALL_ARGUMENTS", note)
    try:
        return _fit_module(source, inputs, notices, solved, enabled, input_dtype)
    except ConversionError as err:
        if not (err.code == "INPUT_SHAPE_INVALID" and "Input type must be an integer" in err.message and inputs
                and all(spec.dtype.startswith("float") for spec in inputs)):
            raise
        if dtype_given:
            raise ConversionError(
                "INPUT_DTYPE_MISMATCH", f"--input-dtype {inputs[0].dtype} was given, but "
                f"{type(source.module).__name__} reads its input with an nn.Embed, which takes int32 token ids",
                "pass --input-dtype int32, or leave --input-dtype out to have it chosen") from None
        retried = Notices()
        ids = [dataclasses.replace(spec, dtype="int32") for spec in inputs]
        result = _fit_module(source, ids, retried, solved, enabled, input_dtype)
    apply(INPUT_DTYPE, f"{type(source.module).__name__} takes token ids (an nn.Embed reads its input): "
                       f"input dtype {inputs[0].dtype} changed to int32", notices, enabled)
    notices.items.extend(retried.items)
    return result


INPUT_DTYPE = FixFamily("dtypes").fixed(
    "INPUT_DTYPE", "a float input of a model whose first layer is an embedding becomes int32 token ids",
    "pass --input-dtype int32")


def _fit_module(source: "Source", inputs: list[InputSpec] | None, notices: Notices, solved: bool,
                enabled: bool, input_dtype: str | None) -> tuple[Variables, list[InputSpec]]:
    """The checkpoint's variables as ``source.module`` expects them, and inputs it can take.

    ``inputs`` are the user's (``solved=False``), or were solved from the
    parameters by the template (``solved=True``), or are None when neither
    gave any. When they do not fit the parameters, the input shapes the
    parameters suggest are tried; exactly one closest fit is taken (reported),
    several are an error listing them.

    Example:
        >>> variables, inputs = fit_module(source, None, Notices())  # doctest: +SKIP
    """
    if not source.variables.collections:  # a live NNX module carries its own variables
        if inputs is None:
            raise _shape_required(source.name)
        if _is_nnx(source.module):
            nnx_check_inputs(source.module, inputs, source.call)
        if solved:
            _note_solved(inputs[0].shape, notices)
        return source.variables, inputs
    first_error = None
    if inputs is not None:
        try:
            variables, found = _plan(source, inputs, enabled)
        except ConversionError as err:
            if err.code not in _INPUT_DEPENDENT or len(inputs) != 1:
                raise
            first_error = err
        else:
            if solved:
                _note_solved(inputs[0].shape, notices)
            notices.items.extend(found.items)
            return variables, inputs
    dtype = inputs[0].dtype if inputs else input_dtype
    given = inputs[0].shape if inputs and not solved else None
    if given == () and first_error is not None:  # an explicit scalar per example is never replaced by a solved shape
        raise ConversionError(
            "INPUT_SHAPE_MISMATCH", f"{first_error.message}; --input-shape \"\" (one number per example) was given",
            "the parameters need an input with axes: give its shape (e.g. --input-shape 8), or leave --input-shape "
            "out to have it solved")
    fits = []
    for shape in _candidates(source, given):
        if inputs and shape == inputs[0].shape:
            continue  # already tried
        try:
            fits.append((shape, _plan(source, [InputSpec("input", shape, dtype)], enabled)))
        except ConversionError:
            continue
    if not fits:
        if first_error is not None and not (solved and first_error.code == "INPUT_SHAPE_INVALID"):
            raise first_error
        raise _shape_required(source.name, first_error)
    fewest = min(_changes(given, shape) for shape, _ in fits)
    best = [(shape, plan) for shape, plan in fits if _changes(given, shape) == fewest]
    if len(best) > 1:
        shown = listing([_fmt(shape) for shape, _ in best])
        raise ConversionError(
            "INPUT_SHAPE_MISMATCH" if given else "INPUT_SHAPE_REQUIRED",
            (f"{first_error.message}; " if given and first_error else f"the input shape of {source.name} is not "
             "fixed by its parameters; ") + f"input shapes that fit them: {shown}",
            "pass the one the model was trained on with --input-shape (without the batch axis)",
        )
    shape, (variables, found) = best[0]
    if given is None:
        _note_solved(shape, notices)
    else:
        apply(INPUT_SHAPE_CORRECTED, f"{first_error.message}; --input-shape {_fmt(given)} changed to "
                                     f"{_fmt(shape)}, which the parameters fit", notices, enabled)
    notices.items.extend(found.items)
    return variables, [InputSpec("input", shape, dtype)]


def _note_solved(shape: tuple[int, ...], notices: Notices) -> None:
    notices.assume("INPUT_SHAPE", f"input shape {_fmt(shape)} solved from the parameter shapes "
                                  "(override with --input-shape)")


def _plan(source: "Source", inputs: list[InputSpec], enabled: bool) -> tuple[Variables, Notices]:
    """Expected variables -> matched tensors -> fixed shapes, with the notices it would report."""
    notices = Notices()
    nnx = _is_nnx(source.module)
    try:
        expected = nnx_expected(source.module) if nnx else linen_expected(source.module, inputs, source.call)
    except ConversionError as err:
        # init may need what only training provides; if inference runs on the checkpoint as it is,
        # convert it as it is (no fixes can be found without the expected shapes).
        if err.code == "INPUT_SHAPE_INVALID" and linen_applies(source.module, source.variables.collections, inputs,
                                                               source.call):
            return source.variables, notices
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
    return Variables(collections), notices


def _candidates(source: "Source", given: tuple[int, ...] | None) -> list[tuple[int, ...]]:
    """Input shapes the parameters determine: the in-features of the first kernels put into the
    given shape (channels, flat size, a missing channel axis) or, when none was given, the template's
    solution. Sizes that pooling leaves undetermined are never proposed for a given shape."""
    kernels = [ref for path, ref in source.variables.params.items()
               if path and path[-1] in ("kernel", "weight") and len(ref.shape) >= 2][:3]
    if given:
        return _fan_in_candidates(given, kernels)[:_MAX_CANDIDATES]
    shapes: list[tuple[int, ...]] = []
    chained = Variables({**source.variables.collections,
                         "params": fit_chain(source.variables.params, "", Notices(), True)})
    for variables in (source.variables, chained):
        for pool in ("avg", "none"):
            try:
                shapes.append(tuple(infer_graph(variables, TemplateOptions(pool=pool), Notices()).inputs[0].shape))
            except ConversionError:
                pass
    shapes += [(fan_in,) for kernel in kernels if len(kernel.shape) == 2 for fan_in in _fan_ins(kernel)]
    return [s for s in dict.fromkeys(shapes) if s and min(s) > 0][:_MAX_CANDIDATES]


def _fan_in_candidates(given: tuple[int, ...], kernels: list) -> list[tuple[int, ...]]:
    shapes = []
    for kernel in kernels:
        if len(kernel.shape) < 2:
            continue
        for fan_in in _fan_ins(kernel):
            shapes += [(*given[:-1], fan_in), (*given, fan_in)]
            if len(given) == 1:
                shapes.append((fan_in,))
    return [s for s in dict.fromkeys(shapes) if s != given and min(s) > 0]


def _fan_ins(kernel) -> list[int]:
    # In-features in Flax layout (..., in, out) and in PyTorch's (out, in, ...).
    return list(dict.fromkeys([int(kernel.shape[-2]), int(kernel.shape[1])]))


def _changes(given: tuple[int, ...] | None, shape: tuple[int, ...]) -> int:
    """How far ``shape`` is from ``given``: the number of axes that differ (every axis if the rank does)."""
    if given is None:
        return 0
    if len(given) != len(shape):
        return max(len(given), len(shape))
    return sum(a != b for a, b in zip(given, shape))


def _shape_required(name: str, tried: ConversionError | None = None) -> ConversionError:
    detail = f" (the shape the template solves does not work: {tried.message})" if tried is not None else ""
    return ConversionError(
        "INPUT_SHAPE_REQUIRED", f"the input shape of {name} cannot be read from its parameters{detail}",
        "pass --input-shape (without the batch axis), e.g. --input-shape 28,28,1",
    )


def _is_nnx(module: Any) -> bool:
    return is_nnx_module(module)


def _fmt(shape: tuple[int, ...]) -> str:
    return ",".join(str(d) for d in shape)
