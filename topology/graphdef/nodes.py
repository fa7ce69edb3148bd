"""The GraphDef being built: nodes in protobuf-JSON form, constants, and the values handlers pass around.

A :class:`Value` is one tensor of the graph: the node output that computes it (``"MatMul_3"``,
``"TopKV2_5:1"``), its shape and dtype, and its numpy value when it is known at conversion
time (then the handlers fold instead of emitting). Shapes may hold JAX's symbolic batch
dimension ``b``: the graph's batch axis is dynamic (``-1``), so a shape that must be spelled out
(a reshape, a broadcast) is built from ``-1`` or from the input's runtime shape.

Attribute helpers write what tfjs-converter 4.22's ``operation_mapper`` reads: ``{"i": "3"}``,
``{"list": {"i": [...]}}``, ``{"s": base64}``, ``{"type": "DT_FLOAT"}``, ``{"b": true}``.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from topology.graph import WeightBinding
from topology.vocabulary.errors import ConversionError
from topology.vocabulary.tensors import TensorRef

TF_DTYPES = {"float32": "DT_FLOAT", "int32": "DT_INT32", "bool": "DT_BOOL"}
MAX_FOLD_ELEMENTS = 1 << 22  # a value folded at conversion time is written as a constant; bound its size


def tf_dtype(dtype: Any) -> str:
    """The dtype TF.js computes ``dtype`` with: float32, int32 or bool (JAX without x64 has no 64-bit values).

    Example:
        >>> tf_dtype(np.dtype("bfloat16") if hasattr(np, "bfloat16") else "float16"), tf_dtype("uint8"), tf_dtype(bool)
        ('float32', 'int32', 'bool')
    """
    kind = np.dtype(dtype).kind if not str(dtype) == "bfloat16" else "f"
    return {"f": "float32", "i": "int32", "u": "int32", "b": "bool"}.get(kind, "float32")


def is_static(dim: Any) -> bool:
    """True for a known dimension size (not the symbolic batch).

    Example:
        >>> is_static(3), is_static(np.int64(3))
        (True, True)
    """
    return isinstance(dim, (int, np.integer))


# -- attributes in protobuf-JSON form ---------------------------------------------------------

def attr_i(value: int) -> dict:
    return {"i": str(int(value))}


def attr_f(value: float) -> dict:
    return {"f": float(value)}


def attr_b(value: bool) -> dict:
    return {"b": bool(value)}


def attr_s(value: str) -> dict:
    return {"s": base64.b64encode(value.encode()).decode()}


def attr_ints(values: Any) -> dict:
    return {"list": {"i": [str(int(v)) for v in values]}}


def attr_strs(values: Any) -> dict:
    return {"list": {"s": [base64.b64encode(v.encode()).decode() for v in values]}}


def attr_type(dtype: Any) -> dict:
    return {"type": TF_DTYPES[tf_dtype(dtype)]}


def attr_shape(shape: Any) -> dict:
    return {"shape": {"dim": [{"size": str(int(d) if is_static(d) else -1)} for d in shape]}}


@dataclass
class Value:
    """One tensor of the graph: where it comes from, its shape, dtype and (if known) its value.

    Example:
        >>> Value("c", (2,), np.dtype("int32"), np.arange(2, dtype="int32")).known
        True
    """

    ref: str | None  # the node output ("name" or "name:k"); None until a known value is needed in the graph
    shape: tuple
    dtype: np.dtype
    value: np.ndarray | None = None
    binding: WeightBinding | None = None  # a parameter, or computed from parameters when written (deferred)
    name: str | None = None  # the constant node's name when it is a parameter

    @property
    def known(self) -> bool:
        return self.value is not None

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass
class Const:
    """A constant node's values: a checkpoint tensor (streamed like a weight), values computed from
    such tensors when written (a folded BatchNorm, a scaled embedding), or an exact array."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # float32 | int32 | bool
    binding: WeightBinding

    @property
    def is_parameter(self) -> bool:
        """From the checkpoint (written as a weight, quantizable), not an exact array."""
        return self.binding.constant is None

    @property
    def array(self) -> np.ndarray | None:
        return self.binding.constant


@dataclass
class GraphDef:
    """The nodes (in execution order), the constants by node name, and the signature.

    Example:
        >>> GraphDef().nodes
        []
    """

    nodes: list[dict] = field(default_factory=list)
    consts: dict[str, Const] = field(default_factory=dict)
    inputs: list[tuple[str, tuple, str]] = field(default_factory=list)  # (name, shape with -1, dtype)
    outputs: list[tuple[str, tuple, str]] = field(default_factory=list)  # (node name, shape with -1, dtype)
    rewrites: list[dict] = field(default_factory=list)
    shapes: dict[str, tuple] = field(default_factory=dict)  # node output -> its shape when emitted (rewrites read it)

    def topology(self) -> dict:
        """The ``modelTopology`` of model.json (a GraphDef in protobuf-JSON form)."""
        return {"node": self.nodes, "library": {}, "versions": {"producer": 1982}}

    def signature(self) -> dict:
        def info(name: str, shape: tuple, dtype: str) -> dict:
            return {"name": f"{name}:0", "dtype": TF_DTYPES[dtype], "tensorShape": attr_shape(shape)["shape"]}

        return {"inputs": {name: info(name, shape, dtype) for name, shape, dtype in self.inputs},
                "outputs": {f"output_{i}": info(name, shape, dtype)
                            for i, (name, shape, dtype) in enumerate(self.outputs)}}


class GraphBuilder:
    """Adds nodes with unique, deterministic names; folds what is known at conversion time.

    Example:
        >>> g = GraphBuilder()
        >>> v = g.const(np.ones((2, 3), "float32"))
        >>> g.op("Relu", [v], {}, (2, 3), v.dtype).ref
        'Relu_2'
    """

    def __init__(self) -> None:
        self.graph = GraphDef()
        self.counter = 0
        self.batch: Any = None  # the symbolic batch dimension, when the graph has one
        self.batch_source: Value | None = None  # an input whose axis 0 is the batch
        self._batch_vector: Value | None = None
        self._consts_by_bytes: dict[tuple, Value] = {}

    def fresh(self, op: str) -> str:
        self.counter += 1
        return f"{op.lstrip('_')}_{self.counter}"

    def add_node(self, name: str, op: str, inputs: list[str], attr: dict) -> None:
        node = {"name": name, "op": op, "input": list(inputs), "attr": attr}
        self.graph.nodes.append(node)

    def op(self, op: str, inputs: list, attr: dict, shape: tuple, dtype: Any, outputs: int = 1) -> Any:
        """Add node ``op`` over ``inputs`` (Values); returns its Value, or a list for ``outputs`` > 1."""
        name = self.fresh(op)
        self.add_node(name, op, [self.ref(v) for v in inputs], attr)
        dtype = np.dtype(tf_dtype(dtype))
        self.graph.shapes[name] = tuple(shape)
        if outputs == 1:
            return Value(name, tuple(shape), dtype)
        return [Value(f"{name}:{k}" if k else name, tuple(shape), dtype) for k in range(outputs)]

    def ref(self, value: Value) -> str:
        """The node output of ``value``, writing a known or deferred value as a constant first."""
        if value.ref is None:
            if value.binding is not None:
                value.ref = self.weight(value.binding, value.name or self.fresh("Const"), value.dtype).ref
            else:
                value.ref = self.const(value.value).ref
        return value.ref

    def weight(self, binding: WeightBinding, name: str, dtype: Any = "float32") -> Value:
        """A constant node whose values the writer streams from ``binding`` (a parameter or derived from them)."""
        dtype = tf_dtype(dtype)
        shape = tuple(binding.shape)
        self.add_node(name, "Const", [], {"dtype": attr_type(dtype), "value": {"tensor": {
            "dtype": TF_DTYPES[dtype], "tensorShape": attr_shape(shape)["shape"]}}})
        self.graph.consts[name] = Const(name, shape, dtype, binding)
        return Value(name, shape, np.dtype(dtype))

    def const(self, array: Any, dtype: Any = None) -> Value:
        """A constant node holding ``array`` (float32, int32 or bool); equal constants share one node."""
        array = np.asarray(array)
        array = np.ascontiguousarray(array.astype(tf_dtype(dtype if dtype is not None else array.dtype)))
        key = (array.dtype.str, array.shape, array.tobytes())
        if key in self._consts_by_bytes:
            return self._consts_by_bytes[key]
        name = self.fresh("Const")
        self.add_node(name, "Const", [], {"dtype": attr_type(array.dtype), "value": {"tensor": {
            "dtype": TF_DTYPES[array.dtype.name], "tensorShape": attr_shape(array.shape)["shape"]}}})
        self.graph.consts[name] = Const(name, tuple(array.shape), array.dtype.name,
                                        WeightBinding(name, tuple(array.shape), constant=array))
        value = Value(name, tuple(array.shape), array.dtype, array)
        self._consts_by_bytes[key] = value
        return value

    def parameter(self, ref: TensorRef, name: str) -> Value:
        """A checkpoint tensor; its constant node is written when something uses it."""
        dtype = np.dtype(tf_dtype(ref.dtype))
        return Value(None, tuple(ref.shape), dtype, binding=WeightBinding(name, tuple(ref.shape), tensor=ref), name=name)

    def placeholder(self, name: str, shape: tuple, dtype: Any) -> Value:
        self.add_node(name, "Placeholder", [], {"dtype": attr_type(dtype), "shape": attr_shape(shape)})
        self.graph.inputs.append((name, tuple(shape), tf_dtype(dtype)))
        value = Value(name, tuple(shape), np.dtype(tf_dtype(dtype)))
        if self.batch_source is None and shape and not is_static(shape[0]):
            self.batch_source = value
        return value

    def ints(self, values: Any) -> Value:
        return self.const(np.asarray(list(values), dtype="int32").reshape(-1))

    def scalar_int(self, value: int) -> Value:
        return self.const(np.asarray(value, dtype="int32"))

    # -- shapes with the dynamic batch -----------------------------------------------------------

    def batch_multiple(self, dim: Any, where: str = "") -> int:
        """``k`` such that ``dim == k * b`` (refused otherwise)."""
        if self.batch is not None:
            for k in range(1, 1 << 16):
                if dim == k * self.batch:
                    return k
        raise ConversionError(
            "GRAPH_DYNAMIC_SHAPE", f"a shape depends on the batch size as {dim}{where}",
            "only shapes that are a multiple of the batch size can be written; keep the batch axis apart, "
            "or convert with a fixed batch shape in the model code",
        )

    def shape_vector(self, shape: tuple, where: str = "") -> Value:
        """An int32 vector of ``shape``, computing batch-dependent sizes from the input's runtime shape."""
        if all(is_static(d) for d in shape):
            return self.ints(shape)
        pieces = []
        for d in shape:
            if is_static(d):
                pieces.append(self.ints([d]))
                continue
            k = self.batch_multiple(d, where)
            batch = self.batch_vector()
            pieces.append(batch if k == 1 else self.op("Mul", [batch, self.ints([k])], {"T": attr_type("int32")},
                                                       (1,), "int32"))
        return self.op("ConcatV2", [*pieces, self.scalar_int(0)], {"N": attr_i(len(pieces)), "T": attr_type("int32")},
                       (len(shape),), "int32")

    def batch_vector(self) -> Value:
        if self._batch_vector is None:
            if self.batch_source is None:
                raise ConversionError("GRAPH_DYNAMIC_SHAPE", "a batch-sized shape is needed but no input has a batch axis",
                                      "give the model an input with a batch axis")
            shape = self.op("Shape", [self.batch_source], {"out_type": attr_type("int32")}, (self.batch_source.rank,),
                            "int32")
            self._batch_vector = self.op("StridedSlice", [shape, self.ints([0]), self.ints([1]), self.ints([1])],
                                         {"begin_mask": attr_i(0), "end_mask": attr_i(0), "ellipsis_mask": attr_i(0),
                                          "new_axis_mask": attr_i(0), "shrink_axis_mask": attr_i(0)}, (1,), "int32")
        return self._batch_vector

    def reshape(self, value: Value, shape: tuple, where: str = "") -> Value:
        """``value`` reshaped to ``shape`` (one batch-dependent size becomes -1); a no-op when equal."""
        shape = tuple(shape)
        if value.shape == shape:
            return value
        if value.known:
            return Value(None, shape, value.dtype, value.value.reshape(shape))
        dynamic = [i for i, d in enumerate(shape) if not is_static(d)]
        if len(dynamic) <= 1:
            target = self.ints([-1 if i in dynamic else d for i, d in enumerate(shape)])
        else:
            target = self.shape_vector(shape, where)
        return self.op("Reshape", [value, target], {"T": attr_type(value.dtype)}, shape, value.dtype)

    def transpose(self, value: Value, perm: tuple) -> Value:
        perm = tuple(int(p) for p in perm)
        if perm == tuple(range(len(perm))):
            return value
        shape = tuple(value.shape[p] for p in perm)
        if value.known:
            return Value(None, shape, value.dtype, np.transpose(value.value, perm))
        return self.op("Transpose", [value, self.ints(perm)], {"T": attr_type(value.dtype)}, shape, value.dtype)

    def cast(self, value: Value, dtype: Any) -> Value:
        dtype = np.dtype(tf_dtype(dtype))
        if value.dtype == dtype:
            return value
        if value.known:
            return Value(None, value.shape, dtype, value.value.astype(dtype))
        return self.op("Cast", [value], {"SrcT": attr_type(value.dtype), "DstT": attr_type(dtype)}, value.shape, dtype)

    def full(self, value: Value, shape: tuple, where: str = "") -> Value:
        """``value`` broadcast to exactly ``shape`` (element-wise ops broadcast by themselves; others need this)."""
        shape = tuple(shape)
        if value.shape == shape:
            return value
        if value.known and all(is_static(d) for d in shape):
            return Value(None, shape, value.dtype, np.broadcast_to(value.value, shape))
        if len(value.shape) < len(shape):
            value = self.reshape(value, (1,) * (len(shape) - value.rank) + tuple(value.shape), where)
        return self.op("BroadcastTo", [value, self.shape_vector(shape, where)], {"T": attr_type(value.dtype)},
                       shape, value.dtype)
