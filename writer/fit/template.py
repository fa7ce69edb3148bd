"""Fit a checkpoint to the parameter-tree template (no model code): kernel layouts and the input shape.

The template (:mod:`topology.infer`) reads a chain of convolutions and dense
layers from the parameters. A given ``--input-shape`` that does not fit the
chain is replaced by the one closest shape the parameters fit (reported as
``fixed[INPUT_SHAPE_CORRECTED]``); several, or none, are left for the graph
stage to report.
"""
from __future__ import annotations

import dataclasses
from topology.infer import TemplateOptions, infer_graph
from topology.vocabulary.errors import ConversionError, Notices
from topology.vocabulary.variables import Variables
from writer.fit.candidates import Rejected, changes, fan_in_candidates, shape_text
from writer.fixes.base import apply
from writer.fixes.dtypes import refuse_unless_float32
from writer.fixes.shapes import INPUT_SHAPE_CORRECTED, fit_chain
from writer.options import ConvertOptions


def template_options(options: ConvertOptions) -> TemplateOptions:
    """The template's options from the conversion's: one input shape at most.

    Example:
        >>> template_options(ConvertOptions(input_shape=(784,))).input_shape
        (784,)
    """
    shapes = options.input_shapes()
    if len(shapes) > 1:
        raise ConversionError("BAD_OPTION", "several input shapes need the model code (--module)",
                              "pass --module path/to/model.py:Model")
    return TemplateOptions(shapes[0] if shapes else None, options.activation, options.pool)


def template_solution(variables: Variables) -> tuple[int, ...] | None:
    """The input shape the template solves from the parameters, or None when it cannot.

    Example:
        >>> template_solution(Variables())  is None
        True
    """
    tried = try_template(variables, TemplateOptions())
    return tried if isinstance(tried, tuple) else None


def try_template(variables: Variables, template: TemplateOptions) -> tuple[int, ...] | Rejected:
    """The template's input shape for ``template``, or why it refused (nothing is reported).

    Example:
        >>> try_template(Variables(), TemplateOptions()).error.code     # doctest: +SKIP
        'NO_PARAMS'
    """
    try:
        return tuple(infer_graph(variables, template, Notices()).inputs[0].shape)
    except ConversionError as err:
        return Rejected(err)


def fit_template(variables: Variables, template: TemplateOptions, source: str, notices: Notices,
                 enabled: bool) -> tuple[Variables, TemplateOptions]:
    """Repair kernel layouts and a wrong input shape for the parameter-tree template.

    Example:
        >>> v, t = fit_template(variables, TemplateOptions((20,)), "mlp.msgpack", Notices(), True)  # doctest: +SKIP
        >>> t.input_shape                                                                            # doctest: +SKIP
        (784,)
    """
    params = fit_chain(variables.params, source, notices, enabled)
    variables = Variables({**variables.collections, "params": params}) if variables.collections else variables
    refuse_unless_float32(params.values(), source, notices, enabled)
    return variables, _fit_input(variables, template, notices, enabled)


def _fit_input(variables: Variables, template: TemplateOptions, notices: Notices, enabled: bool) -> TemplateOptions:
    if template.input_shape is None:
        return template
    first = try_template(variables, template)
    if not (isinstance(first, Rejected) and first.given_shape_misfit):
        return template  # it fits, or converting reports why not
    given = tuple(template.input_shape)
    fits = [shape for shape in fan_in_candidates(given, list(variables.params.values()))
            if not isinstance(try_template(variables, dataclasses.replace(template, input_shape=shape)), Rejected)]
    closest = [s for s in fits if changes(given, s) == min(changes(given, f) for f in fits)]
    if len(closest) != 1:
        return template  # none, or not one: converting reports the mismatch
    apply(INPUT_SHAPE_CORRECTED, f"{first.error.message}; --input-shape {shape_text(given)} changed to "
                                 f"{shape_text(closest[0])}, which the parameters fit", notices, enabled)
    return dataclasses.replace(template, input_shape=closest[0])
