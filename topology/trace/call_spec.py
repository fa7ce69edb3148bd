"""How the converter calls the model: which method, which input arrays by keyword, which fixed keywords.

By default the input arrays are passed positionally to ``__call__`` with the
inference flags the method accepts (``train=False``, ``deterministic=True``, ...).
A :class:`CallSpec` says otherwise, so that an original module converts without a
hand-written wrapper. Its text form is the CLI's ``--call``, written like the call
itself with ``*`` for each input array, in the order of ``--input-shape``:

    --call 'encode(*, train=False)'            # model.encode(x, train=False)
    --call '__call__(inputs=*, train=False)'   # keyword-only inputs: model(inputs=x, train=False)
    --call '(input_ids=*, attention_mask=*)'   # two inputs by keyword (__call__ when no name is given)

``--method encode`` is short for ``--call 'encode'`` (every input positional).
An input passed by keyword is named after its keyword in model.json.
"""
from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable

from topology.trace.signature import INFERENCE_FLAGS, rng_arguments
from topology.vocabulary.errors import ConversionError

_INPUT_MARK = re.compile(r"(?<=[(,=])\s*\*\s*(?=[,)])")  # a lone `*` argument: an input array
_BAD_CALL_HINT = ("write it like the call, with * for each input array: --call 'encode(*, train=False)' or "
                  "--call '__call__(inputs=*, train=False)'")


def inference_kwargs(call: Callable) -> dict:
    """Inference flags ``call`` accepts, e.g. ``{"train": False}``, and a fixed key for every
    required rng argument (``z_rng``, ``rngs``; see :func:`topology.trace.signature.rng_arguments`).

    Example:
        >>> def f(x, train: bool = True): ...
        >>> inference_kwargs(f)
        {'train': False}
    """
    try:
        parameters = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return {}
    flags = {name: value for name, value in INFERENCE_FLAGS.items() if name in parameters}
    return {**flags, **rng_arguments(call)}


@dataclass(frozen=True)
class CallSpec:
    """Which method of the model is called, and how.

    ``inputs`` has one entry per input array: None passes it positionally, a name by
    that keyword; empty means every input positionally. ``keywords`` are fixed
    keyword arguments (they win over the inference flags the converter adds).

    Example:
        >>> spec = CallSpec.parse("encode(*, mask=*, train=False)")
        >>> spec.method, spec.inputs, spec.keywords
        ('encode', (None, 'mask'), (('train', False),))
        >>> spec.text()
        'encode(*, mask=*, train=False)'
    """

    method: str = "__call__"
    inputs: tuple[str | None, ...] = ()
    keywords: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "CallSpec":
        """A CallSpec from ``--call`` text: ``NAME(ARG, ...)``, ``(ARG, ...)`` or a bare method ``NAME``."""
        source = text.strip()
        if re.fullmatch(r"[A-Za-z_]\w*", source):
            return cls(method=source)
        if source.startswith("("):
            source = "__call__" + source
        try:
            node = ast.parse(_INPUT_MARK.sub(" ...", source), mode="eval").body
        except SyntaxError:
            node = None
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            raise ConversionError("BAD_CALL_SPEC", f"--call {text!r} is not a call like NAME(*, key=value)",
                                  _BAD_CALL_HINT)
        inputs: list[str | None] = []
        keywords: list[tuple[str, Any]] = []
        for arg in node.args:
            if not _is_mark(arg):
                raise ConversionError("BAD_CALL_SPEC", f"--call {text!r}: a positional argument other than * "
                                      f"({ast.unparse(arg)})",
                                      "mark input arrays with * and pass fixed values by keyword: "
                                      "--call 'encode(*, train=False)'")
            inputs.append(None)
        for keyword in node.keywords:
            if keyword.arg is None:
                raise ConversionError("BAD_CALL_SPEC", f"--call {text!r}: ** is not allowed", _BAD_CALL_HINT)
            if _is_mark(keyword.value):
                inputs.append(keyword.arg)
                continue
            try:
                keywords.append((keyword.arg, ast.literal_eval(keyword.value)))
            except ValueError:
                raise ConversionError("BAD_CALL_SPEC", f"--call {text!r}: {keyword.arg}="
                                      f"{ast.unparse(keyword.value)} is not a Python literal",
                                      "fixed keywords in --call take literals: numbers, strings, "
                                      "True/False/None, tuples") from None
        return cls(node.func.id, tuple(inputs), tuple(keywords))

    def text(self) -> str:
        """The ``--call`` text of this spec (parses back to it)."""
        parts = ["*" if name is None else f"{name}=*" for name in self.inputs]
        parts += [f"{name}={value!r}" for name, value in self.keywords]
        return f"{self.method}({', '.join(parts)})"

    @property
    def is_default(self) -> bool:
        return self == CallSpec()

    def function(self, module: Any) -> Callable:
        """The method called on ``module`` (unbound, from its class), or CALL_METHOD_NOT_FOUND."""
        function = getattr(type(module), self.method, None)
        if not callable(function):
            methods = sorted(n for n, v in vars(type(module)).items() if callable(v) and not n.startswith("_"))
            raise ConversionError("CALL_METHOD_NOT_FOUND",
                                  f"{type(module).__name__} has no method {self.method!r} (--call/--method)",
                                  f"its methods: {', '.join(methods[:20]) or 'only __call__'}")
        return function

    def input_names(self, count: int) -> list[str | None]:
        """The keyword of each of ``count`` inputs (None: positional); the count must match a spec's."""
        if not self.inputs:
            return [None] * count
        if len(self.inputs) != count:
            raise ConversionError("CALL_INPUT_COUNT", f"--call {self.text()} passes {len(self.inputs)} input "
                                  f"array(s) (*), but the model is given {count} input(s)",
                                  "give one --input-shape (and --input-dtype) per * in --call, in the same order")
        return list(self.inputs)

    def arguments(self, module: Any, xs: list) -> tuple[list, dict]:
        """Positional and keyword arguments of the call on the input arrays ``xs``.

        Example:
            >>> class M:
            ...     def encode(self, *, inputs, train=True): ...
            >>> CallSpec.parse("encode(inputs=*)").arguments(M(), ["x"])
            ([], {'train': False, 'inputs': 'x'})
        """
        kwargs = inference_kwargs(self.function(module))
        kwargs.update(self.keywords)
        args = []
        for name, x in zip(self.input_names(len(xs)), xs):
            if name is None:
                args.append(x)
            else:
                kwargs[name] = x
        return args, kwargs

    def linen_apply(self, module: Any, variables: Any, xs: list) -> Any:
        """``module.apply(variables, ...)`` as this spec calls it."""
        args, kwargs = self.arguments(module, xs)
        return module.apply(variables, *args, method=self.method, **kwargs)

    def linen_init(self, module: Any, rngs: Any, xs: list) -> Any:
        """``module.init(rngs, ...)`` as this spec calls it."""
        args, kwargs = self.arguments(module, xs)
        return module.init(rngs, *args, method=self.method, **kwargs)

    def nnx_call(self, module: Any, xs: list) -> Any:
        """The live NNX ``module`` called as this spec says."""
        args, kwargs = self.arguments(module, xs)
        return getattr(module, self.method)(*args, **kwargs)


def as_call_spec(value: Any) -> CallSpec:
    """A CallSpec from None (the default), ``--call`` text, or a CallSpec.

    Example:
        >>> as_call_spec("encode").method
        'encode'
    """
    if value is None:
        return CallSpec()
    if isinstance(value, CallSpec):
        return value
    if isinstance(value, str):
        return CallSpec.parse(value)
    raise ConversionError("BAD_CALL_SPEC", f"call={value!r} is not a string like 'encode(*, train=False)'",
                          _BAD_CALL_HINT)


def _is_mark(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is Ellipsis
