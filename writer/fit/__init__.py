"""The fit stage: the checkpoint read, made to fit the model it is converted with.

One entry, :func:`fit`, between reading and building the graph. It selects the
model's variables from the tensors read (with the key fixes), and owns every
decision about the model's inputs (the shapes and dtypes given, solved from the
parameters or corrected) and every repair of the variables (names, layouts,
dtypes; :mod:`writer.fixes` declares them), with the retries: another input
shape when the parameters suggest one, int32 ids when an embedding reads the
input. The front end is the parameter-tree template (no model code,
:mod:`writer.fit.template`) or the model code (:mod:`writer.fit.module`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from topology.graph import InputSpec
from topology.infer import TemplateOptions
from topology.trace.call_spec import CallSpec
from topology.vocabulary.errors import ConversionError, Notices
from topology.vocabulary.tensors import TensorRef
from topology.vocabulary.variables import Variables
from writer.fit.module import fit_module
from writer.fit.template import fit_template, template_options, template_solution
from writer.fixes.dtypes import decide_dtype_policy
from writer.options import ConvertOptions
from writer.variables import select_variables
from writer.weight_dtypes import DtypePolicy

if TYPE_CHECKING:
    from writer.sources import Source

__all__ = ["Fitted", "fit", "fit_inputs"]


@dataclass
class Fitted:
    """What the fit stage decided: the variables the weights are bound to, the model's inputs and
    what each stored dtype is written as (``dtype_policy``, applied by the write stage).

    ``template`` is set when the front end is the parameter-tree template (no model code; its
    options carry the input shape), ``inputs`` when it is the model code (named as the call passes
    them).

    Example:
        >>> Fitted(Variables(), template=TemplateOptions((784,))).front_end
        'template'
    """

    variables: Variables
    inputs: list[InputSpec] | None = None
    template: TemplateOptions | None = None
    dtype_policy: DtypePolicy = field(default_factory=DtypePolicy)  # what each stored dtype is written as

    @property
    def front_end(self) -> str:
        """``"template"`` (the graph is inferred from the parameters) or ``"module"`` (traced)."""
        return "template" if self.template is not None else "module"


def fit(source: "Source", options: ConvertOptions, notices: Notices) -> Fitted:
    """Fit ``source``'s variables to its model for ``options``;
    ``source.variables`` is replaced by the fitted variables, ``source.call`` set from ``--call``.

    A source read with ``select=False`` has its variables selected here first (wrappers stripped,
    keys normalised: :func:`writer.variables.select_variables`).

    Example:
        >>> fitted = fit(resolve_source("examples/mnist_ckpt", None, None, None, Notices()),
        ...              ConvertOptions(), Notices())                                   # doctest: +SKIP
        >>> fitted.front_end, fitted.template.input_shape                              # doctest: +SKIP
        ('template', (28, 28, 1))
    """
    if source.unselected is not None:
        source.variables = select_variables(source.unselected, notices, options.fix)
        source.unselected = None
    if source.module is None:
        if options.format == "graph-model":
            raise ConversionError(
                "GRAPH_MODEL_NEEDS_MODULE", f"--format graph-model traces the model code, and none was given for "
                f"{source.name}", "pass --module path/to/model.py:Model (or use --format layers-model, which can "
                "infer small CNNs and MLPs)",
            )
        if options.call is not None:
            raise ConversionError("BAD_OPTION", f"--call/--method {options.call_spec().text()} without model code: "
                                  f"the template inferred from {source.name} has no methods",
                                  "pass the model with --module FILE.py:NAME (or convert a Hugging Face folder)")
        source.variables, template = fit_template(source.variables, template_options(options), source.name,
                                                  notices, options.fix)
        return Fitted(source.variables, template=template, dtype_policy=dtype_policy(source, options, notices))
    source.call = options.call_spec()
    inputs = named_by_call(fit_inputs(source, options, notices), source.call)
    return Fitted(source.variables, inputs, dtype_policy=dtype_policy(source, options, notices))


def dtype_policy(source: "Source", options: ConvertOptions, notices: Notices) -> DtypePolicy:
    """What each dtype of the fitted variables is written as, decided once, after they are fitted
    (with ``--no-fix``, a weight that is not float32 is refused).

    Example:
        >>> dtype_policy(source, ConvertOptions(), Notices()).describe()   # doctest: +SKIP
        {'bfloat16': 'float', 'float32': 'as is'}
    """
    refs = (ref for tensors in source.variables.collections.values() for ref in tensors.values()
            if isinstance(ref, TensorRef))
    return decide_dtype_policy(refs, source.name, notices, options.fix)


def fit_inputs(source: "Source", options: ConvertOptions, notices: Notices) -> list[InputSpec]:
    """The model inputs (given, or solved), after fitting the variables to the model code;
    ``source.variables`` is replaced by the fitted variables.

    Example:
        >>> fit_inputs(source, ConvertOptions(input_shape=(4,)), Notices())   # doctest: +SKIP
        [InputSpec(name='input', shape=(4,), dtype='float32')]
    """
    shapes = options.input_shapes()
    solved = not shapes
    if solved:  # the template's solution is tried first; fit_module checks it against the model
        solution = template_solution(source.variables)
        shapes = [solution] if solution is not None else []
    inputs = given_inputs(shapes, options.input_dtypes(len(shapes))) if shapes else None
    solved_dtype = None if inputs else options.input_dtypes(1)[0]  # only read when no inputs are known
    source.variables, inputs = fit_module(source, inputs, notices, solved, enabled=options.fix,
                                          input_dtype=solved_dtype, dtype_given=options.input_dtype is not None)
    return inputs


def given_inputs(shapes: list[tuple[int, ...]], dtypes: list[str]) -> list[InputSpec]:
    """One input per shape: ``input``, or ``input_1``, ``input_2``, ... when there are several.

    Example:
        >>> [spec.name for spec in given_inputs([(4,), (2,)], ["float32", "int32"])]
        ['input_1', 'input_2']
    """
    names = ["input"] if len(shapes) == 1 else [f"input_{i + 1}" for i in range(len(shapes))]
    return [InputSpec(name, tuple(shape), dtype) for name, shape, dtype in zip(names, shapes, dtypes)]


def named_by_call(inputs: list[InputSpec], call: CallSpec) -> list[InputSpec]:
    """Inputs passed by keyword are named after it in model.json (``input_ids``, ``attention_mask``).

    Example:
        >>> named_by_call([InputSpec("input", (4,))], CallSpec())[0].name
        'input'
    """
    names = call.input_names(len(inputs))
    return [InputSpec(name or spec.name, spec.shape, spec.dtype) for spec, name in zip(inputs, names)]
