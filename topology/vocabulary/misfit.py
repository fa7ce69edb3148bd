"""A refusal that depends on the input tried: another input shape or dtype may fit.

The fit stage (:mod:`writer.fit`) tries input shapes and dtypes until the
checkpoint and the model agree. Whether an error means "try another input" is
decided by the kind of the error, never by its code or wording: the places that
compare a model with an input raise :class:`Misfit` and say what refused it.
To the user it is the same ``error[CODE]`` as any :class:`ConversionError`.
"""
from __future__ import annotations

from topology.vocabulary.errors import ConversionError

REFUSERS = ("parameters", "model", "input")


class Misfit(ConversionError):
    """The input tried does not fit; another input may.

    ``refused_by``: ``"parameters"`` (the checkpoint's tensors do not fit the model built for this
    input), ``"model"`` (the model code cannot be called on it), ``"input"`` (a given input shape
    does not fit the parameters' chain). ``wants_integers``: the model reads the input with an
    embedding lookup, which takes integer ids (a float input refused for its dtype).

    Example:
        >>> err = Misfit("SHAPE_MISMATCH", "params/d/kernel (3, 2) vs (4, 2)", "check --input-shape")
        >>> err.refused_by, err.wants_integers, err.render().splitlines()[0]
        ('parameters', False, 'error[SHAPE_MISMATCH]: params/d/kernel (3, 2) vs (4, 2)')
    """

    def __init__(self, code: str, message: str, hint: str = "", *, refused_by: str = "parameters",
                 wants_integers: bool = False) -> None:
        super().__init__(code, message, hint)
        assert refused_by in REFUSERS, refused_by
        self.refused_by = refused_by
        self.wants_integers = wants_integers
