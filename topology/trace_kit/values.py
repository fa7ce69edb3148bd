"""What a jaxpr variable stands for while the graph is being built."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from topology.vocabulary.errors import ConversionError


@dataclass(frozen=True, eq=False)
class Tensor:
    """The output of a tfjs layer (or a model input), with its traced shape (batch included)."""

    layer: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def keras_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[1:])


@dataclass(eq=False)
class Pending:
    """A function of one tensor built from element-wise (and row-wise) operations.

    It stays symbolic until something needs it as a tensor; then it is
    identified numerically (relu, gelu, softmax, an affine map, ...) and
    becomes one or more layers. ``fn`` maps a value of ``root`` to this value.
    """

    root: Tensor
    fn: Callable[[Any], Any]
    shape: tuple[int, ...]
    dtype: np.dtype
    where: str = ""  # user source location of the last operation, for messages
    materialized: Tensor | None = field(default=None, repr=False)
    # The last operation and its operands (Tensor, Pending or Const), when an element-wise handler
    # made this value: lets ``topology.ops.expression`` compile what no catalogued function matches.
    expr: tuple | None = field(default=None, repr=False)


@dataclass(frozen=True, eq=False)
class Inside:
    """A value computed inside a marked layer call; replaced by the layer as a whole."""

    call: int


@dataclass(frozen=True)
class Lazy:
    """A constant computed from checkpoint tensors only when its layer's weights are written.

    Example:
        >>> Lazy(lambda: np.ones(2, "float32"), (2,), np.dtype("float32"), "params/pe").compute().tolist()
        [1.0, 1.0]
    """

    compute: Callable[[], np.ndarray]
    shape: tuple[int, ...]
    dtype: np.dtype
    origin: str  # the parameters it comes from, for names and messages
    channels: int | None = None  # C when the value is a length-C vector broadcast along the last axis


@dataclass(frozen=True, eq=False)
class Const:
    """A value that does not depend on the inputs. ``value`` is None when it comes from the
    (abstract) parameters and so is unknown at trace time; ``lazy`` then says how to compute it
    from the checkpoint when a layer needs it (a :class:`Lazy`)."""

    value: Any = None
    lazy: Lazy | None = None

    @property
    def known(self) -> bool:
        return self.value is not None


def root_of(value: Tensor | Pending) -> Tensor:
    """The tensor a value is a function of (a tensor is its own root).

    Example:
        >>> x = Tensor("x", (2, 3), np.dtype("float32"))
        >>> root_of(Pending(x, abs, (2, 3), np.dtype("float32"))) is x, root_of(x) is x
        (True, True)
    """
    return value.root if isinstance(value, Pending) else value


def as_function(value: Any) -> Callable[[Any], Any]:
    """``value`` as a function of its root's value: a pending function, the identity, or a constant.

    Example:
        >>> as_function(Const(2.0))(np.zeros(3)), as_function(Tensor("x", (1,), np.dtype("float32")))(5)
        (2.0, 5)
    """
    if isinstance(value, Pending):
        return value.fn
    if isinstance(value, Tensor):
        return lambda r: r
    return lambda r, v=value.value: v


def one_example(array: np.ndarray, origin: str) -> np.ndarray:
    """Row 0 of a constant traced with a batch axis, after checking every row is the same.

    Example:
        >>> one_example(np.ones((2, 3)), "params/pe").tolist()
        [1.0, 1.0, 1.0]
    """
    array = np.asarray(array)
    if array.shape[0] > 1 and not np.array_equal(array, np.broadcast_to(array[:1], array.shape), equal_nan=True):
        raise ConversionError("UNSUPPORTED_OPERATION",
                              f"the constant {origin} differs from one example of the batch to the next",
                              "a constant used with activations must be the same for every example")
    return array[0]
