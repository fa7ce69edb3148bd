"""The diagnostics corpus: broken inputs built from small real Flax models, each with its expected outcome.

A :class:`Case` builds its input into a fresh folder (no binary blobs are
stored) and says what must happen: ``"fixed"`` (the conversion succeeds,
reports the listed notice codes, and the model predicts like JAX in real
TF.js) or an error code (a :class:`~topology.vocabulary.errors.ConversionError` with that
code, a message naming what it must name, a hint, and the output folder
untouched). :mod:`tests.corpus.runner` runs them.
"""
from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from tests import flax_models as fm
from tests.corpus import models as M

FIXED = "fixed"


@dataclass
class Built:
    """What a case built: the conversion's arguments and the JAX reference.

    Example:
        >>> Built("ck.msgpack", options={"input_shape": (20,)}).options["input_shape"]
        (20,)
    """

    source: Any  # a path, or an in-memory object (TrainState, module)
    options: dict = field(default_factory=dict)  # ConvertOptions fields
    module: Any = None
    variables: Any = None
    reference: Callable[[np.ndarray], np.ndarray] | None = None  # the JAX model, for fixed cases
    input_shape: tuple[int, ...] = M.MLP_INPUT  # test inputs for the comparison (without batch)
    message_has: tuple[str, ...] = ()  # what an error message must name
    input_ids: int = 0  # > 0: test inputs are int32 token ids below this (an embedding model)


@dataclass(frozen=True)
class Case:
    """One broken input and its expected outcome.

    Example:
        >>> CASES[0].expect in (FIXED,) or CASES[0].expect.isupper()
        True
    """

    name: str
    expect: str  # FIXED or an error code
    build: Callable[[Path], Built]
    codes: tuple[str, ...] = ()  # notices a fixed case must report
    about: str = ""
    out: str = "absent"  # the output folder before converting: "absent", or "sentinel" (a file in it, force=True)

    @property
    def fixable(self) -> bool:
        return self.expect == FIXED


CASES: list[Case] = []


def case(name: str, expect: str, codes: tuple[str, ...] = (), about: str = "", out: str | None = None):
    """Register the decorated builder as a corpus case (errors default to a non-empty output folder + --force).

    Example:
        >>> @case("my-case", "EMPTY_CHECKPOINT", about="a 0-byte file")   # doctest: +SKIP
        ... def _(folder): ...
    """
    def register(build: Callable[[Path], Built]) -> Callable[[Path], Built]:
        CASES.append(Case(name, expect, build, tuple(codes), about,
                          out or ("absent" if expect == FIXED else "sentinel")))
        return build

    return register


# ---------------------------------------------------------------- helpers


def _mlp(seed: int = 0, module: Any = None):
    module = module or M.MLP()
    return module, fm.init(module, M.MLP_INPUT, seed)


def _cnn(seed: int = 0):
    module = M.CNN()
    return module, fm.init(module, M.CNN_INPUT, seed)


def _ref(module: Any, variables: dict) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: fm.run(module, variables, x)


def _nnx_ref(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: np.asarray(model(jnp.asarray(x)))


def _map(tree: Any, fn: Callable[[np.ndarray], np.ndarray]) -> Any:
    return jax.tree_util.tree_map(lambda a: fn(np.asarray(a)), tree)


def _torch(params: dict) -> dict:
    """Kernels in PyTorch layout: dense (out, in), conv OIHW."""
    def convert(path, leaf):
        leaf = np.asarray(leaf)
        if path[-1].key != "kernel":
            return leaf
        return leaf.T.copy() if leaf.ndim == 2 else np.transpose(leaf, (3, 2, 0, 1)).copy()

    return jax.tree_util.tree_map_with_path(convert, params)


def _npz(path: Path, flat: dict[str, np.ndarray]) -> Path:
    np.savez(path, **flat)
    return path


def _flat(tree: dict, sep: str = "/") -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(tree, sep=sep).items()}


def _vars_as(variables: dict, dtype: Any) -> dict:
    return _map(variables, lambda a: a.astype(dtype))


def _upcast(variables: dict) -> dict:
    return _map(variables, lambda a: a.astype(np.float32))


# ---------------------------------------------------------------- fixable: keys


@case("nested-params", FIXED, ("NESTED_PARAMS",), "a variables dict saved under 'params' (params/params/...)")
def _(folder: Path) -> Built:
    module, v = _mlp()
    return Built(fm.save_msgpack({"params": v}, folder / "nested.msgpack"), reference=_ref(module, v))


@case("flax-optim-target", FIXED, ("WRAPPER_REMOVED",), "an old flax.optim Optimizer: {'target': params, 'state': ...}")
def _(folder: Path) -> Built:
    module, v = _mlp()
    moments = _map(v["params"], lambda a: np.full_like(a, 0.5))  # shaped like the params: a trap
    tree = {"target": v["params"], "state": {"step": 3, "param_states": moments}}
    return Built(fm.save_msgpack(tree, folder / "optim.msgpack"), reference=_ref(module, v))


@case("wrapped-train-state", FIXED, ("WRAPPER_REMOVED",), "a TrainState saved inside {'state': ...}")
def _(folder: Path) -> Built:
    module, v = _mlp()
    state = fm.train_state_of(module, v)
    return Built(fm.save_msgpack({"state": state, "epoch": 4}, folder / "wrapped.msgpack"), reference=_ref(module, v))


@case("train-state-nested-params", FIXED, ("NESTED_PARAMS",),
      "in memory: TrainState.create(params=variables) put the whole variables dict under params")
def _(folder: Path) -> Built:
    import optax
    from flax.training import train_state

    module, v = _mlp()
    state = train_state.TrainState.create(apply_fn=module.apply, params=v, tx=optax.sgd(0.1))
    return Built(state, options={"input_shape": M.MLP_INPUT}, reference=_ref(module, v))


@case("nnx-value-leaves", FIXED, ("NNX_VALUE_LEAVES",), "nnx.state(model) saved with Orbax: leaves <var>/value")
def _(folder: Path) -> Built:
    trained = M.NnxMLP(nnx.Rngs(3))
    path = fm.save_orbax(nnx.state(trained), folder / "nnx_state")
    return Built(path, module=M.NnxMLP(nnx.Rngs(0)), options={"input_shape": M.MLP_INPUT},
                 reference=_nnx_ref(trained))


@case("linen-partitioned-params", FIXED, ("BOXED_VALUE_LEAVES",),
      "params made with nn.with_logical_partitioning (lm1b style) saved boxed: leaves <var>/value")
def _(folder: Path) -> Built:
    import flax.linen as nn

    class Partitioned(nn.Module):
        @nn.compact
        def __call__(self, x):
            init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
            return nn.Dense(3)(nn.relu(nn.Dense(8, kernel_init=init)(x)))

    module = Partitioned()
    v = module.init(jax.random.PRNGKey(5), jnp.ones((1, *M.MLP_INPUT)))
    return Built(fm.save_msgpack(v, folder / "boxed.msgpack"), module=module, options={"input_shape": M.MLP_INPUT},
                 reference=_ref(module, v))


@case("nnx-integer-keys", FIXED, (), "an nnx.List saved as a pure dict: integer keys layers/0, layers/1")
def _(folder: Path) -> Built:
    trained = M.NnxMLP(nnx.Rngs(4))
    tree = nnx.state(trained).to_pure_dict()
    assert 0 in tree["layers"]  # really integer keys
    path = fm.save_msgpack(_map(tree, np.asarray), folder / "nnx_pure.msgpack")
    return Built(path, module=M.NnxMLP(nnx.Rngs(0)), reference=_nnx_ref(trained))


@case("value-suffix-npz", FIXED, ("VALUE_SUFFIX",), "npz keys ending in '.value'")
def _(folder: Path) -> Built:
    module, v = _mlp()
    flat = {k + ".value": a for k, a in _flat(v).items()}
    return Built(_npz(folder / "suffix.npz", flat), reference=_ref(module, v))


@case("dotted-keys-npz", FIXED, ("KEYS_SPLIT",), "npz keys joined with '.' (params.Dense_0.kernel)")
def _(folder: Path) -> Built:
    module, v = _mlp()
    return Built(_npz(folder / "dotted.npz", _flat(v, sep=".")), reference=_ref(module, v))


@case("flat-keys-msgpack", FIXED, ("KEYS_SPLIT",), "a msgpack map of '/'-joined keys instead of a tree")
def _(folder: Path) -> Built:
    module, v = _mlp()
    return Built(fm.save_msgpack(_flat(v), folder / "flat.msgpack"), reference=_ref(module, v))


@case("sequential-integer-keys", FIXED, ("LAYER_RENAMED",),
      "the model's layers are layers_0/layers_1; the checkpoint (a PyTorch-style Sequential) names them '0', '2'")
def _(folder: Path) -> Built:
    module = M.SequentialMLP()
    v = fm.init(module, M.MLP_INPUT)
    p = v["params"]
    tree = {"params": {"0": p["layers_0"], "2": p["layers_1"]}}
    return Built(fm.save_msgpack(tree, folder / "seq.msgpack"), module=module,
                 options={"input_shape": M.MLP_INPUT}, reference=_ref(module, v))


@case("renamed-layers", FIXED, ("LAYER_RENAMED",), "model names Dense_0/Dense_1, checkpoint dense_in/dense_out")
def _(folder: Path) -> Built:
    _, named_v = _mlp(seed=5, module=M.NamedMLP())
    module = M.MLP()
    auto_v = {"params": {"Dense_0": named_v["params"]["dense_in"], "Dense_1": named_v["params"]["dense_out"]}}
    return Built(fm.save_msgpack(named_v, folder / "named.msgpack"), module=module,
                 options={"input_shape": M.MLP_INPUT}, reference=_ref(module, auto_v))


@case("renamed-layers-no-input-shape", FIXED, ("LAYER_RENAMED", "INPUT_SHAPE"),
      "model names dense_in/dense_out, checkpoint has automatic names; no --input-shape given")
def _(folder: Path) -> Built:
    module, named_v = _mlp(seed=6, module=M.NamedMLP())
    auto = {"params": {"Dense_0": named_v["params"]["dense_in"], "Dense_1": named_v["params"]["dense_out"]}}
    return Built(fm.save_msgpack(auto, folder / "auto.msgpack"), module=module, reference=_ref(module, named_v))


@case("renamed-same-shapes-msgpack", FIXED, ("LAYER_RENAMED",),
      "three 16x16 layers renamed c, a, b: paired in the file's (call) order")
def _(folder: Path) -> Built:
    module = M.SameWidthMLP()
    v = fm.init(module, (16,), seed=7)
    p = v["params"]
    tree = {"params": {"c": p["Dense_0"], "a": p["Dense_1"], "b": p["Dense_2"]}}
    return Built(fm.save_msgpack(tree, folder / "same.msgpack"), module=module, options={"input_shape": (16,)},
                 reference=_ref(module, v), input_shape=(16,))


@case("renamed-same-shapes-orbax", FIXED, ("LAYER_RENAMED",),
      "three 16x16 layers named layer2, layer3, layer10 in Orbax (stored sorted): paired by their numbers")
def _(folder: Path) -> Built:
    module = M.SameWidthMLP()
    v = fm.init(module, (16,), seed=8)
    p = v["params"]
    tree = {"params": {"layer2": p["Dense_0"], "layer3": p["Dense_1"], "layer10": p["Dense_2"]}}
    return Built(fm.save_orbax(tree, folder / "same_orbax"), module=module, options={"input_shape": (16,)},
                 reference=_ref(module, v), input_shape=(16,))


@case("ema-copy", FIXED, ("IGNORED_SUBTREE",), "an EMA copy beside the params ({'params', 'ema_params'})")
def _(folder: Path) -> Built:
    module, v = _mlp()
    _, ema = _mlp(seed=9)
    return Built(fm.save_msgpack({"params": v["params"], "ema_params": ema["params"]}, folder / "ema.msgpack"),
                 reference=_ref(module, v))


@case("unused-layer", FIXED, ("IGNORED_SUBTREE",), "the checkpoint has an extra head the model does not use")
def _(folder: Path) -> Built:
    module, v = _mlp()
    params = dict(v["params"], aux_head={"kernel": np.ones((16, 3), np.float32), "bias": np.zeros(3, np.float32)})
    return Built(fm.save_msgpack({"params": params}, folder / "extra.msgpack"), module=module,
                 options={"input_shape": M.MLP_INPUT}, reference=_ref(module, v))


# ---------------------------------------------------------------- fixable: shapes


@case("torch-dense-template", FIXED, ("TRANSPOSED_KERNEL",), "dense kernels stored (out, in); no model code")
def _(folder: Path) -> Built:
    module, v = _mlp()
    return Built(fm.save_msgpack({"params": _torch(v["params"])}, folder / "torch.msgpack"), reference=_ref(module, v))


@case("torch-square-module", FIXED, ("TRANSPOSED_KERNEL",),
      "(out, in) kernels including a square 16x16 one, which follows the others' layout; with the module")
def _(folder: Path) -> Built:
    module = M.SquareMLP()
    v = fm.init(module, M.MLP_INPUT, seed=10)
    return Built(fm.save_msgpack({"params": _torch(v["params"])}, folder / "square.msgpack"), module=module,
                 options={"input_shape": M.MLP_INPUT}, reference=_ref(module, v))


@case("torch-square-template", FIXED, ("TRANSPOSED_KERNEL",), "the same without model code: the chain decides")
def _(folder: Path) -> Built:
    module = M.SquareMLP()
    v = fm.init(module, M.MLP_INPUT, seed=11)
    return Built(fm.save_msgpack({"params": _torch(v["params"])}, folder / "square.msgpack"),
                 reference=_ref(module, v))


@case("torch-cnn-template", FIXED, ("CONV_KERNEL_LAYOUT", "TRANSPOSED_KERNEL"),
      "conv kernels OIHW and dense kernels (out, in); no model code")
def _(folder: Path) -> Built:
    module, v = _cnn()
    return Built(fm.save_msgpack({"params": _torch(v["params"])}, folder / "torch_cnn.msgpack"),
                 reference=_ref(module, v), input_shape=M.CNN_INPUT)


@case("torch-cnn-module", FIXED, ("CONV_KERNEL_LAYOUT", "TRANSPOSED_KERNEL"), "the same with the module, in Orbax")
def _(folder: Path) -> Built:
    module, v = _cnn(seed=12)
    return Built(fm.save_orbax({"params": _torch(v["params"])}, folder / "torch_cnn"), module=module,
                 options={"input_shape": M.CNN_INPUT}, reference=_ref(module, v), input_shape=M.CNN_INPUT)


@case("bias-row-template", FIXED, ("VECTOR_RESHAPED",), "biases stored (1, n); no model code")
def _(folder: Path) -> Built:
    module, v = _cnn(seed=13)
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: np.asarray(a).reshape(1, -1) if p[-1].key == "bias" else np.asarray(a), v["params"])
    return Built(fm.save_msgpack({"params": params}, folder / "rows.msgpack"), reference=_ref(module, v),
                 input_shape=M.CNN_INPUT)


@case("bias-row-module", FIXED, ("VECTOR_RESHAPED",), "biases stored (1, n) and (n, 1); with the module, in npz")
def _(folder: Path) -> Built:
    module, v = _mlp(seed=14)
    flat = _flat(v)
    flat["params/Dense_0/bias"] = flat["params/Dense_0/bias"].reshape(1, -1)
    flat["params/Dense_1/bias"] = flat["params/Dense_1/bias"].reshape(-1, 1)
    return Built(_npz(folder / "rows.npz", flat), module=module, options={"input_shape": M.MLP_INPUT},
                 reference=_ref(module, v))


@case("wrong-channels-template", FIXED, ("INPUT_SHAPE_CORRECTED",), "--input-shape 12,12,3 for a 1-channel CNN")
def _(folder: Path) -> Built:
    module, v = _cnn(seed=15)
    return Built(fm.save_msgpack(v, folder / "cnn.msgpack"), options={"input_shape": (12, 12, 3)},
                 reference=_ref(module, v), input_shape=M.CNN_INPUT)


@case("wrong-size-module", FIXED, ("INPUT_SHAPE_CORRECTED",),
      "--input-shape 30 for a model whose first kernel takes 20")
def _(folder: Path) -> Built:
    module, v = _mlp(seed=16)
    return Built(fm.save_msgpack(v, folder / "mlp.msgpack"), module=module, options={"input_shape": (30,)},
                 reference=_ref(module, v))


@case("missing-channel-axis-module", FIXED, ("INPUT_SHAPE_CORRECTED",), "--input-shape 12,12 (no channel axis)")
def _(folder: Path) -> Built:
    module, v = _cnn(seed=17)
    return Built(fm.save_msgpack(v, folder / "cnn.msgpack"), module=module, options={"input_shape": (12, 12)},
                 reference=_ref(module, v), input_shape=M.CNN_INPUT)


@case("torch-state-dict", FIXED, ("KEYS_SPLIT", "LAYER_RENAMED", "VARIABLE_RENAMED", "TRANSPOSED_KERNEL"),
      "a PyTorch-style state dict: fc1.weight (out, in), fc1.bias, ...; module given, no --input-shape")
def _(folder: Path) -> Built:
    module, v = _mlp(seed=18)
    p = v["params"]
    flat = {"fc1.weight": p["Dense_0"]["kernel"].T, "fc1.bias": p["Dense_0"]["bias"],
            "fc2.weight": p["Dense_1"]["kernel"].T, "fc2.bias": p["Dense_1"]["bias"]}
    return Built(_npz(folder / "state_dict.npz", flat), module=module, reference=_ref(module, v))


@case("torch-batchnorm", FIXED, ("KEYS_SPLIT", "LAYER_RENAMED", "VARIABLE_RENAMED", "TRANSPOSED_KERNEL"),
      "a PyTorch-style state dict with BatchNorm: bn.weight, bn.running_mean, num_batches_tracked")
def _(folder: Path) -> Built:
    module = M.BNMLP()
    v = fm.init(module, M.MLP_INPUT, seed=19)
    rng = np.random.RandomState(0)  # trained-looking statistics, so that using them matters
    v["batch_stats"]["BatchNorm_0"]["mean"] = rng.normal(size=16).astype(np.float32)
    v["batch_stats"]["BatchNorm_0"]["var"] = rng.uniform(0.5, 2, size=16).astype(np.float32)
    p, s = v["params"], v["batch_stats"]
    flat = {"fc.weight": p["Dense_0"]["kernel"].T, "fc.bias": p["Dense_0"]["bias"],
            "bn.weight": p["BatchNorm_0"]["scale"], "bn.bias": p["BatchNorm_0"]["bias"],
            "bn.running_mean": s["BatchNorm_0"]["mean"], "bn.running_var": s["BatchNorm_0"]["var"],
            "bn.num_batches_tracked": np.array(100, np.int64),
            "head.weight": p["Dense_1"]["kernel"].T, "head.bias": p["Dense_1"]["bias"]}
    return Built(_npz(folder / "bn_state_dict.npz", flat), module=module, options={"input_shape": M.MLP_INPUT},
                 reference=_ref(module, v))


# ---------------------------------------------------------------- fixable: dtypes


@case("float64", FIXED, ("DTYPE_CONVERTED",), "float64 parameters")
def _(folder: Path) -> Built:
    module, v = _mlp(seed=20)
    return Built(fm.save_msgpack(_vars_as(v, np.float64), folder / "f64.msgpack"), reference=_ref(module, v))


@case("bfloat16", FIXED, ("DTYPE_CONVERTED",), "bfloat16 parameters (the model then computes with their values)")
def _(folder: Path) -> Built:
    module, v = _cnn(seed=21)
    low = _vars_as(v, ml_dtypes.bfloat16)
    return Built(fm.save_msgpack(low, folder / "bf16.msgpack"), reference=_ref(module, _upcast(low)),
                 input_shape=M.CNN_INPUT)


@case("float16-module", FIXED, ("DTYPE_CONVERTED",), "float16 parameters, with the module, in Orbax")
def _(folder: Path) -> Built:
    module, v = _mlp(seed=22)
    low = _vars_as(v, np.float16)
    return Built(fm.save_orbax(low, folder / "f16"), module=module, options={"input_shape": M.MLP_INPUT},
                 reference=_ref(module, _upcast(low)))


@case("int64", FIXED, ("DTYPE_CONVERTED",), "int64 parameters (quantized-looking small integers)")
def _(folder: Path) -> Built:
    module, v = _mlp(seed=23)
    ints = _map(v, lambda a: np.round(a * 8).astype(np.int64))
    return Built(fm.save_msgpack(ints, folder / "i64.msgpack"), reference=_ref(module, _upcast(ints)))


@case("bool-kernel", FIXED, ("DTYPE_CONVERTED",), "a bool kernel (a 0/1 mask) among float32 parameters")
def _(folder: Path) -> Built:
    module, v = _mlp(seed=24)
    v["params"]["Dense_1"]["kernel"] = v["params"]["Dense_1"]["kernel"] > 0
    return Built(fm.save_msgpack(v, folder / "bool.msgpack"), reference=_ref(module, _upcast(v)))


# ---------------------------------------------------------------- errors: the file


def _mlp_file(folder: Path, name: str = "mlp.msgpack") -> Path:
    return fm.save_msgpack(_mlp()[1], folder / name)


@case("truncated-msgpack", "TRUNCATED_CHECKPOINT", about="a msgpack file cut at 60 %")
def _(folder: Path) -> Built:
    path = _mlp_file(folder)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    return Built(path, message_has=("mlp.msgpack",))


@case("corrupt-msgpack", "CORRUPT_CHECKPOINT", about="a damaged dtype name inside a msgpack file")
def _(folder: Path) -> Built:
    path = _mlp_file(folder)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"float32", b"flaot32", 1))
    return Built(path, message_has=("flaot32",))


@case("truncated-npz", "CORRUPT_CHECKPOINT", about="an .npz cut in half")
def _(folder: Path) -> Built:
    path = fm.save_npz(_mlp()[1], folder / "mlp.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return Built(path, message_has=("mlp.npz",))


@case("orbax-missing-data", "CORRUPT_CHECKPOINT", about="an Orbax folder whose data chunk of one array was deleted")
def _(folder: Path) -> Built:
    import orbax.checkpoint as ocp

    path = folder / "ck"
    handler = ocp.PyTreeCheckpointHandler(use_ocdbt=False)
    ocp.Checkpointer(handler).save(path.absolute(), args=ocp.args.PyTreeSave(_mlp()[1]))
    (path / "params.Dense_1.kernel" / "0.0").unlink()
    return Built(path, message_has=("params/Dense_1/kernel",))


@case("empty-file", "EMPTY_CHECKPOINT", about="a 0-byte file")
def _(folder: Path) -> Built:
    path = folder / "params.msgpack"
    path.write_bytes(b"")
    return Built(path)


@case("empty-folder", "EMPTY_CHECKPOINT", about="an empty checkpoint folder")
def _(folder: Path) -> Built:
    (folder / "ckpt").mkdir()
    return Built(folder / "ckpt")


@case("image", "NOT_A_CHECKPOINT", about="a PNG image passed as the checkpoint")
def _(folder: Path) -> Built:
    path = folder / "digit.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return Built(path, message_has=("PNG",))


@case("pickle", "PICKLE_REFUSED", about="a pickled params dict (loading it would run code)")
def _(folder: Path) -> Built:
    path = folder / "params.bin"  # no telling suffix: found from the content
    path.write_bytes(pickle.dumps(_mlp()[1], protocol=4))
    return Built(path)


@case("npz-object-array", "PICKLE_REFUSED", about="an .npz holding an object array (a pickle inside)")
def _(folder: Path) -> Built:
    flat = _flat(_mlp()[1])
    flat["params/meta"] = np.array([{"lr": 0.1}], dtype=object)
    path = folder / "obj.npz"
    np.savez(path, **flat)
    return Built(path, message_has=("params/meta",))


@case("unknown-file", "NOT_A_CHECKPOINT", about="a JSON file passed as the checkpoint")
def _(folder: Path) -> Built:
    path = folder / "config.json"
    path.write_text(json.dumps({"features": [16, 10]}))
    return Built(path)


@case("missing-path", "CHECKPOINT_NOT_FOUND", about="a checkpoint path that does not exist")
def _(folder: Path) -> Built:
    return Built(folder / "no_such_ckpt", message_has=("no_such_ckpt",))


@case("unfinished-orbax", "INCOMPLETE_CHECKPOINT", about="a CheckpointManager folder holding only an unfinished save")
def _(folder: Path) -> Built:
    saved = fm.save_orbax(_mlp()[1], folder / "tmp_item")
    root = folder / "ckpts"
    root.mkdir()
    shutil.move(str(saved), str(root / "5.orbax-checkpoint-tmp-1700000000"))
    return Built(root)


@case("training-state-only", "NO_PARAMS", about="a checkpoint of the optimizer state without params")
def _(folder: Path) -> Built:
    state = fm.train_state_of(M.MLP(), _mlp()[1])
    tree = flax.serialization.to_state_dict(state)
    del tree["params"]
    return Built(fm.save_msgpack(tree, folder / "opt.msgpack"))


# ---------------------------------------------------------------- errors: the values


@case("nan-weight", "NONFINITE_WEIGHT", about="two NaNs in a kernel")
def _(folder: Path) -> Built:
    v = _map(_mlp()[1], np.array)  # writable copies
    v["params"]["Dense_1"]["kernel"][0, :2] = np.nan
    return Built(fm.save_msgpack(v, folder / "nan.msgpack"), message_has=("params/Dense_1/kernel", "2 NaN/Inf"))


@case("int64-out-of-range", "VALUE_OUT_OF_RANGE", about="int64 weights beyond int32")
def _(folder: Path) -> Built:
    v = _map(_mlp()[1], lambda a: np.round(a * 8).astype(np.int64))
    v["params"]["Dense_0"]["kernel"][0, 0] = 2 ** 40
    return Built(fm.save_msgpack(v, folder / "big.msgpack"), message_has=("params/Dense_0/kernel", "int32"))


@case("float64-overflow", "VALUE_OUT_OF_RANGE", about="a float64 weight beyond float32's range")
def _(folder: Path) -> Built:
    v = _vars_as(_mlp()[1], np.float64)
    v["params"]["Dense_0"]["bias"][3] = 1e39
    return Built(fm.save_msgpack(v, folder / "huge.msgpack"), message_has=("params/Dense_0/bias",))


@case("string-weight", "UNSUPPORTED_DTYPE", about="an .npz whose bias is an array of strings")
def _(folder: Path) -> Built:
    flat = _flat(_mlp()[1])
    flat["params/Dense_1/bias"] = np.array(["x"] * 10)
    return Built(_npz(folder / "str.npz", flat), message_has=("params/Dense_1/bias",))


# ---------------------------------------------------------------- errors: the model


@case("missing-layer", "MISSING_PARAMETER", about="the module has a layer the checkpoint lacks")
def _(folder: Path) -> Built:
    v = fm.init(M.MLP(), M.MLP_INPUT)
    del v["params"]["Dense_1"]
    return Built(fm.save_msgpack(v, folder / "short.msgpack"), module=M.MLP(), options={"input_shape": M.MLP_INPUT},
                 message_has=("params/Dense_1/kernel",))


@case("batchnorm-stats-missing", "MISSING_COLLECTION", about="a BatchNorm model saved without batch_stats")
def _(folder: Path) -> Built:
    v = fm.init(M.BNMLP(), M.MLP_INPUT)
    return Built(fm.save_msgpack({"params": v["params"]}, folder / "no_stats.msgpack"), module=M.BNMLP(),
                 options={"input_shape": M.MLP_INPUT}, message_has=("batch_stats/BatchNorm_0/mean",))


@case("batchnorm-template", "TOPOLOGY_NOT_INFERRED", about="a BatchNorm checkpoint without model code")
def _(folder: Path) -> Built:
    return Built(fm.save_msgpack(fm.init(M.BNMLP(), M.MLP_INPUT), folder / "bn.msgpack"))


@case("embed-float-input", FIXED, ("INPUT_DTYPE",), "a model starting with nn.Embed, no --input-dtype (float32 by default)")
def _(folder: Path) -> Built:
    import flax.linen as nn

    class Tagger(nn.Module):
        @nn.compact
        def __call__(self, ids):
            return nn.Dense(3)(nn.Embed(12, 4)(ids))

    module = Tagger()
    v = jax.tree_util.tree_map(np.asarray, module.init(jax.random.PRNGKey(3), np.zeros((1, 5), np.int32)))
    return Built(fm.save_msgpack(v, folder / "tagger.msgpack"), module=module,
                 options={"input_shape": (5,)}, reference=_ref(module, v),
                 input_shape=(5,), input_ids=12)


@case("module-needs-mask", "MODULE_SIGNATURE", about="__call__(self, x, mask): an argument the converter cannot supply")
def _(folder: Path) -> Built:
    import flax.linen as nn

    class Masked(nn.Module):
        @nn.compact
        def __call__(self, x, mask):
            return nn.Dense(3)(x) * mask

    module = Masked()
    v = jax.tree_util.tree_map(np.asarray, module.init(jax.random.PRNGKey(0), np.zeros((1, 4)), np.ones((1, 3))))
    return Built(fm.save_msgpack(v, folder / "masked.msgpack"), module=module, options={"input_shape": (4,)},
                 message_has=("`mask`",))


@case("unsupported-operation", "UNSUPPORTED_OPERATION", about="a model that sorts its features")
def _(folder: Path) -> Built:
    module = M.SortingMLP()
    return Built(fm.save_msgpack(fm.init(module, M.MLP_INPUT), folder / "sort.msgpack"), module=module,
                 options={"input_shape": M.MLP_INPUT}, message_has=("sort",))


@case("input-too-small", "INPUT_SHAPE_INVALID", about="--input-shape 3,3,1 for two VALID 3x3 convolutions")
def _(folder: Path) -> Built:
    module = M.GlobalPoolCNN()
    return Built(fm.save_msgpack(fm.init(module, (8, 8, 1)), folder / "gp.msgpack"), module=module,
                 options={"input_shape": (3, 3, 1)}, message_has=("3, 3, 1",))


@case("input-shape-unfixed", "INPUT_SHAPE_REQUIRED",
      about="no --input-shape, and every size >= 5x5 fits the parameters")
def _(folder: Path) -> Built:
    module = M.GlobalPoolCNN()
    return Built(fm.save_msgpack(fm.init(module, (8, 8, 1)), folder / "gp.msgpack"), module=module)


@case("wrong-image-size", "INPUT_SHAPE_MISMATCH",
      about="--input-shape 16,16,1 for a CNN trained on 12x12: pooling admits 12 to 15, so no single fix")
def _(folder: Path) -> Built:
    module, v = _cnn(seed=25)
    return Built(fm.save_msgpack(v, folder / "cnn.msgpack"), options={"input_shape": (16, 16, 1)},
                 message_has=("16,16,1", "params/Dense_0"))


@case("other-model", "SHAPE_MISMATCH", about="a checkpoint of a wider model (32 hidden units instead of 16)")
def _(folder: Path) -> Built:
    v = fm.init(fm.MLP((32, 10)), M.MLP_INPUT)
    return Built(fm.save_msgpack(v, folder / "wide.msgpack"), module=M.MLP(), options={"input_shape": M.MLP_INPUT},
                 message_has=("Dense_0", "(20, 32)"))


@case("several-param-trees", "AMBIGUOUS_PARAMS", about="{'model': {'params'}, 'ema_model': {'params'}}: which one?")
def _(folder: Path) -> Built:
    tree = {"model": {"params": _mlp()[1]["params"]}, "ema_model": {"params": _mlp(seed=1)[1]["params"]}}
    return Built(fm.save_msgpack(tree, folder / "two.msgpack"), message_has=("model/params", "ema_model/params"))


@case("ambiguous-rename", "AMBIGUOUS_LAYER_MATCH", about="renamed layers plus an EMA copy with the same shapes")
def _(folder: Path) -> Built:
    p = _mlp()[1]["params"]
    tree = {"params": {"fc1": p["Dense_0"], "fc2": p["Dense_1"], "fc1_ema": p["Dense_0"]}}
    return Built(fm.save_msgpack(tree, folder / "ema_inside.msgpack"), module=M.MLP(),
                 options={"input_shape": M.MLP_INPUT}, message_has=("fc1", "fc1_ema"))


@case("ambiguous-order", "AMBIGUOUS_LAYER_MATCH", about="same-shaped layers with unnumbered names in Orbax (sorted)")
def _(folder: Path) -> Built:
    p = fm.init(M.SameWidthMLP(), (16,))["params"]
    tree = {"params": {"gamma": p["Dense_0"], "alpha": p["Dense_1"], "beta": p["Dense_2"]}}
    return Built(fm.save_orbax(tree, folder / "unnumbered"), module=M.SameWidthMLP(), options={"input_shape": (16,)},
                 message_has=("Dense_0", "alpha"))


@case("ambiguous-layout", "AMBIGUOUS_LAYOUT", about="one kernel (out, in), one (in, out), one square: which layout?")
def _(folder: Path) -> Built:
    p = fm.init(M.SquareMLP(), M.MLP_INPUT)["params"]
    p["Dense_0"]["kernel"] = p["Dense_0"]["kernel"].T.copy()
    return Built(fm.save_msgpack({"params": p}, folder / "mixed.msgpack"), module=M.SquareMLP(),
                 options={"input_shape": M.MLP_INPUT}, message_has=("Dense_1/kernel",))


# ---------------------------------------------------------------- errors: options and output


@case("no-fix-transposed", "FIX_DISABLED", about="--no-fix with (out, in) kernels")
def _(folder: Path) -> Built:
    return Built(fm.save_msgpack({"params": _torch(_mlp()[1]["params"])}, folder / "torch.msgpack"),
                 options={"fix": False}, message_has=("Dense_0/kernel",))


@case("no-fix-float64", "FIX_DISABLED", about="--no-fix with float64 parameters")
def _(folder: Path) -> Built:
    return Built(fm.save_msgpack(_vars_as(_mlp()[1], np.float64), folder / "f64.msgpack"), options={"fix": False},
                 message_has=("float64",))


@case("no-fix-renamed", "FIX_DISABLED", about="--no-fix with renamed layers")
def _(folder: Path) -> Built:
    named = fm.init(M.NamedMLP(), M.MLP_INPUT)
    return Built(fm.save_msgpack(named, folder / "named.msgpack"), module=M.MLP(),
                 options={"fix": False, "input_shape": M.MLP_INPUT}, message_has=("dense_in",))


@case("output-not-empty", "OUTPUT_NOT_EMPTY", about="the output folder holds files and --force is not given",
      out="sentinel-no-force")
def _(folder: Path) -> Built:
    return Built(_mlp_file(folder))


@case("output-is-a-file", "OUTPUT_NOT_A_FOLDER", about="the output path is an existing file", out="file")
def _(folder: Path) -> Built:
    return Built(_mlp_file(folder))


def by_name(name: str) -> Case:
    """The corpus case called ``name``.

    Example:
        >>> by_name("nested-params").codes
        ('NESTED_PARAMS',)
    """
    return next(c for c in CASES if c.name == name)

