"""What one try of an input gives, and the input shapes worth trying.

A try is a plain result: :class:`Found` (the variables fitted for that input,
with the notices the fixes would report) or :class:`Rejected` (the error the
user sees if nothing fits better). Whether another input may cure a rejection
is a property of the error's kind (:class:`~topology.vocabulary.misfit.Misfit`),
never of its code or wording.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from topology.graph import InputSpec
from topology.vocabulary.errors import ConversionError, Notices
from topology.vocabulary.misfit import Misfit
from topology.vocabulary.variables import Variables

MAX_CANDIDATES = 12


@dataclass
class Found:
    """An input the checkpoint fits, the variables fitted to it and what fitting them reports.

    Example:
        >>> Found(Variables(), [InputSpec("input", (4,))]).inputs[0].shape
        (4,)
    """

    variables: Variables
    inputs: list[InputSpec]
    notices: Notices = field(default_factory=Notices)


@dataclass(frozen=True)
class Rejected:
    """Why an input was refused: ``error`` is raised as it is when nothing fits better.

    Example:
        >>> Rejected(Misfit("SHAPE_MISMATCH", "k (3, 2) vs (4, 2)")).input_dependent
        True
        >>> Rejected(ConversionError("NO_PARAMS", "none")).input_dependent
        False
    """

    error: ConversionError

    @property
    def input_dependent(self) -> bool:
        """Another input shape may fit (the parameters' shapes depend on the input)."""
        return isinstance(self.error, Misfit)

    @property
    def refused_by_model(self) -> bool:
        """The model code cannot be called on the input (not: the parameters do not fit it)."""
        return isinstance(self.error, Misfit) and self.error.refused_by == "model"

    @property
    def wants_integers(self) -> bool:
        """The model reads the input with an embedding lookup, which takes integer ids."""
        return isinstance(self.error, Misfit) and self.error.wants_integers

    @property
    def given_shape_misfit(self) -> bool:
        """A given input shape does not fit the template's chain of parameters."""
        return isinstance(self.error, Misfit) and self.error.refused_by == "input"


def fan_in_candidates(given: tuple[int, ...], kernels: list) -> list[tuple[int, ...]]:
    """``given`` with its last axis replaced by, or extended with, the in-features of ``kernels``.

    Example:
        >>> import numpy as np
        >>> fan_in_candidates((20,), [np.zeros((784, 32))])
        [(784,), (20, 784), (32,), (20, 32)]
    """
    shapes = []
    for kernel in kernels:
        if len(kernel.shape) < 2:
            continue
        for fan_in in fan_ins(kernel):
            shapes += [(*given[:-1], fan_in), (*given, fan_in)]
            if len(given) == 1:
                shapes.append((fan_in,))
    return [s for s in dict.fromkeys(shapes) if s != given and min(s) > 0]


def fan_ins(kernel) -> list[int]:
    """In-features of a kernel in Flax layout (..., in, out) and in PyTorch's (out, in, ...).

    Example:
        >>> import numpy as np
        >>> fan_ins(np.zeros((3, 3, 1, 8)))
        [1, 3]
    """
    return list(dict.fromkeys([int(kernel.shape[-2]), int(kernel.shape[1])]))


def changes(given: tuple[int, ...] | None, shape: tuple[int, ...]) -> int:
    """How far ``shape`` is from ``given``: the number of axes that differ (every axis if the rank does).

    Example:
        >>> changes((28, 28, 1), (28, 28, 3)), changes((784,), (28, 28, 1)), changes(None, (4,))
        (1, 3, 0)
    """
    if given is None:
        return 0
    if len(given) != len(shape):
        return max(len(given), len(shape))
    return sum(a != b for a, b in zip(given, shape))


def shape_text(shape: tuple[int, ...]) -> str:
    """A shape as the CLI takes it.

    Example:
        >>> shape_text((28, 28, 1))
        '28,28,1'
    """
    return ",".join(str(d) for d in shape)
