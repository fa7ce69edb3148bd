"""--optimize: each exact graph rewrite on hand-built graphs (before/after), and on Flax models in real TF.js.

Each rewrite module in topology/optimize/ declares its cases: Flax models in
which it applies. Every case is converted with and without --optimize; both
must match JAX in real TF.js at the suite's tolerance, and the optimized one
must list the rewrite and have fewer layers.
"""
from __future__ import annotations

import json
import pkgutil

import jax
import jax.numpy as jnp
import jsonschema
import numpy as np
import pytest

import topology.optimize as optimize_pkg
from tests import flax_models as fm
from tests.conftest import ROOT
from tests.jax_reference import case_inputs, case_shapes, compare_batches, prepare, randomize
from topology.graph import InputSpec, LayerGraph, LayerNode, WeightBinding
from topology.layers.base import layer_base
from topology.optimize import REGISTRY, optimize_graph
from writer import to_tensorflowjs
from writer.cli import main


# -- hand-built graphs ---------------------------------------------------------
def _const(name, array):
    array = np.asarray(array, np.float32)
    return WeightBinding(name, array.shape, constant=array)


def _dense(name, inputs, kernel, bias=None, activation="linear"):
    weights = [_const("kernel", kernel)] + ([_const("bias", bias)] if bias is not None else [])
    config = layer_base(units=int(np.shape(kernel)[-1]), activation=activation, use_bias=bias is not None)
    return LayerNode(name, "Dense", config, list(inputs), weights, (int(np.shape(kernel)[-1]),))


def _bn(name, inputs, channels, rng, epsilon=1e-3, scale=True, center=True):
    weights = []
    if scale:
        weights.append(_const("gamma", rng.uniform(0.5, 1.5, channels)))
    if center:
        weights.append(_const("beta", rng.normal(0, 1, channels)))
    weights += [_const("moving_mean", rng.normal(0, 1, channels)), _const("moving_variance", rng.uniform(0.5, 2, channels))]
    config = layer_base(axis=-1, epsilon=epsilon, center=center, scale=scale, momentum=0.99)
    return LayerNode(name, "BatchNormalization", config, list(inputs), weights, (channels,))


def _layer(name, cls, inputs, shape=None, **config):
    return LayerNode(name, cls, layer_base(**config), list(inputs), [], shape)


def _weights(layer):
    return {w.name: w.materialize() for w in layer.weights}


def test_registry_discovers_every_rewrite_module():
    modules = {m.name for m in pkgutil.iter_modules(optimize_pkg.__path__)} - {"base", "affine"}
    assert set(REGISTRY) == modules
    assert all(rewrite.cases() for rewrite in REGISTRY.values())


def test_fold_batchnorm_into_dense_without_bias_creates_the_bias_in_float64():
    rng = np.random.RandomState(0)
    kernel = rng.normal(0, 1, (4, 3))
    graph = LayerGraph([InputSpec("x", (4,))], [_dense("d", ["x"], kernel), _bn("bn", ["d"], 3, rng)], ["bn"])
    literal = _weights(graph.layers[1])
    optimize_graph(graph)
    assert [(l.name, l.class_name) for l in graph.layers] == [("d", "Dense")] and graph.outputs == ["d"]
    assert graph.layers[0].config["use_bias"] is True
    assert graph.rewrites == [{"rewrite": "fold_batchnorm", "removed": "bn", "into": "d"}]
    got = _weights(graph.layers[0])
    s = literal["gamma"].astype(np.float64) / np.sqrt(literal["moving_variance"].astype(np.float64) + 1e-3)
    want_kernel = (kernel.astype(np.float32).astype(np.float64) * s).astype(np.float32)
    want_bias = (literal["beta"] - literal["moving_mean"].astype(np.float64) * s).astype(np.float32)
    assert got["kernel"].dtype == np.float32 and got["kernel"].tobytes() == want_kernel.tobytes()
    assert got["bias"].tobytes() == want_bias.tobytes()
    assert _weights(graph.layers[0])["kernel"].tobytes() == got["kernel"].tobytes()  # deterministic
    x = rng.normal(0, 1, (5, 4))
    literal_out = ((x @ kernel.astype(np.float32)) - literal["moving_mean"]) * s + literal["beta"]
    assert np.allclose(x @ got["kernel"] + got["bias"], literal_out, atol=1e-5)


@pytest.mark.parametrize("why", ["two-readers", "relu-producer", "output-producer", "on-input"])
def test_fold_batchnorm_refuses_what_is_not_exact(why):
    rng = np.random.RandomState(1)
    dense = _dense("d", ["x"], rng.normal(0, 1, (4, 3)), activation="relu" if why == "relu-producer" else "linear")
    bn = _bn("bn", ["x" if why == "on-input" else "d"], 4 if why == "on-input" else 3, rng)
    layers, outputs = [dense, bn], ["bn"]
    if why == "two-readers":
        layers.append(_layer("other", "Activation", ["d"], (3,), activation="tanh"))
        outputs = ["bn", "other"]
    if why == "output-producer":
        outputs = ["bn", "d"]
    graph = LayerGraph([InputSpec("x", (4,))], layers, outputs)
    optimize_graph(graph, only=("fold_batchnorm",))
    assert "bn" in [l.name for l in graph.layers] and graph.rewrites == []


def test_drop_identity_layers_but_not_a_needed_copy():
    layers = [
        _layer("drop", "Dropout", ["x"], (2, 3), rate=0.5),
        _layer("lin", "Activation", ["drop"], (2, 3), activation="linear"),
        _layer("same", "Reshape", ["lin"], (2, 3), target_shape=[2, 3]),
        _layer("keep", "Reshape", ["same"], (3, 2), target_shape=[3, 2]),
        _layer("copy", "Rescaling", ["keep"], (3, 2), scale=1.0, offset=0.0),
        _layer("mul", "Multiply", ["keep", "copy"], (3, 2)),  # x * x: the copy keeps the names distinct
    ]
    graph = LayerGraph([InputSpec("x", (2, 3))], layers, ["mul"])
    optimize_graph(graph)
    assert [l.name for l in graph.layers] == ["keep", "copy", "mul"] and graph.layers[0].inputs == ["x"]
    assert [(r["removed"], r["kind"]) for r in graph.rewrites] == [("drop", "Dropout"), ("lin", "Activation"),
                                                                  ("same", "Reshape")]


def test_fuse_activation_relu6_and_refusals():
    rng = np.random.RandomState(2)
    layers = [_dense("a", ["x"], rng.normal(0, 1, (4, 3)), np.zeros(3)),
              _layer("r6", "ReLU", ["a"], (3,), max_value=6.0, negative_slope=0.0, threshold=0.0),
              _dense("b", ["r6"], rng.normal(0, 1, (3, 3))),
              _layer("leaky", "ReLU", ["b"], (3,), max_value=None, negative_slope=0.1, threshold=0.0)]
    graph = LayerGraph([InputSpec("x", (4,))], layers, ["leaky"])
    optimize_graph(graph)
    assert [l.name for l in graph.layers] == ["a", "b", "leaky"]  # a leaky ReLU is no activation field
    assert graph.layers[0].config["activation"] == "relu6" and graph.layers[1].inputs == ["a"]


def test_merge_rescaling_then_fold_into_dense():
    rng = np.random.RandomState(3)
    kernel, bias = rng.normal(0, 1, (2, 2)), rng.normal(0, 1, 2)
    layers = [_layer("r1", "Rescaling", ["x"], (2,), scale=2.0, offset=1.0),
              _layer("r2", "Rescaling", ["r1"], (2,), scale=3.0, offset=-1.0),
              _dense("d", ["r2"], kernel, bias),
              _layer("r3", "Rescaling", ["d"], (2,), scale=-0.5, offset=0.25)]
    graph = LayerGraph([InputSpec("x", (2,))], layers, ["r3"])
    optimize_graph(graph)
    assert [(l.name, l.class_name) for l in graph.layers] == [("r2", "Rescaling"), ("d", "Dense")]
    assert (graph.layers[0].config["scale"], graph.layers[0].config["offset"]) == (6.0, 2.0)
    assert graph.outputs == ["d"]
    got = _weights(graph.layers[1])
    assert np.array_equal(got["bias"], (bias.astype(np.float32).astype(np.float64) * -0.5 + 0.25).astype(np.float32))


def test_tanh_to_sigmoid():
    layers = [_layer("pre", "Rescaling", ["x"], (3,), scale=0.8, offset=0.0),
              _layer("t", "Activation", ["pre"], (3,), activation="tanh"),
              _layer("post", "Rescaling", ["t"], (3,), scale=0.5, offset=0.5)]
    graph = LayerGraph([InputSpec("x", (3,))], layers, ["post"])
    optimize_graph(graph)
    assert [l.name for l in graph.layers] == ["pre", "t"] and graph.outputs == ["t"]
    assert graph.layers[0].config["scale"] == 1.6 and graph.layers[1].config["activation"] == "sigmoid"
    x = np.linspace(-5, 5, 11)
    assert np.allclose(0.5 * np.tanh(0.8 * x) + 0.5, 1 / (1 + np.exp(-1.6 * x)), atol=1e-15)


# -- Flax models in real TF.js ---------------------------------------------------
CASES = [(f"{key}:{case.name}", key, case) for key, rewrite in REGISTRY.items() for case in rewrite.cases()]


@pytest.mark.parametrize("case_id, key, case", CASES, ids=[c[0] for c in CASES])
def test_rewrite_case_matches_jax_in_tfjs(tmp_path, tfjs, case_id, key, case):
    module, variables, run_jax = prepare(case)
    shape = case_shapes(case)[0]
    literal = to_tensorflowjs(module, tmp_path / "literal", variables=variables, input_shape=shape, optimize=False)
    optimized = to_tensorflowjs(module, tmp_path / "optimized", variables=variables, input_shape=shape)
    applied = [r["rewrite"] for r in optimized.rewrites]
    assert literal.rewrites == [] and len(optimized.layers) == len(literal.layers) - len(applied)
    if "-not-" in case.name:
        assert key not in applied
    else:
        assert key in applied
    meta = json.loads((tmp_path / "optimized" / "model.json").read_text())["userDefinedMetadata"]["flax2tfjs"]
    assert meta["optimize"] == {"enabled": True, "rewrites": optimized.rewrites}
    for folder in ("literal", "optimized"):
        compare_batches(tfjs, tmp_path / folder, run_jax, lambda batch: case_inputs(case, batch, batch))


# -- the command line, verify, determinism -------------------------------------
MODEL_CODE = '''
import flax.linen as nn


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.Dropout(0.3, deterministic=not train)(x)
        x = nn.Conv(8, (3, 3), strides=2)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        return nn.Dense(4)(x.mean(axis=(1, 2)))
'''


@pytest.fixture(scope="module")
def bn_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("optimize")
    (folder / "bnnet.py").write_text(MODEL_CODE)
    import importlib.util

    spec = importlib.util.spec_from_file_location("bnnet_for_test", folder / "bnnet.py")
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    variables = code.BNNet().init(jax.random.PRNGKey(0), jnp.zeros((1, 10, 10, 3)))
    variables = randomize(jax.tree_util.tree_map(np.asarray, dict(variables)))
    checkpoint = fm.save_msgpack(variables, folder / "bnnet.msgpack")
    return checkpoint, f"{folder / 'bnnet.py'}:BNNet"


def _classes(out):
    config = json.loads((out / "model.json").read_text())["modelTopology"]["model_config"]["config"]
    return [layer["class_name"] for layer in config["layers"]][1:]


def test_cli_optimizes_by_default_and_no_optimize_writes_the_literal_graph(tmp_path, capsys, bn_checkpoint):
    checkpoint, module = bn_checkpoint
    args = [str(checkpoint), "--module", module, "--input-shape", "10,10,3"]
    assert main([args[0], str(tmp_path / "literal"), *args[1:], "--no-optimize", "--quiet"]) == 0
    assert main([args[0], str(tmp_path / "opt"), *args[1:], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert _classes(tmp_path / "literal") == ["Conv2D", "BatchNormalization", "ReLU", "Dropout", "Conv2D",
                                              "BatchNormalization", "ReLU", "GlobalAveragePooling2D", "Dense"]
    assert _classes(tmp_path / "opt") == ["Conv2D", "Conv2D", "GlobalAveragePooling2D", "Dense"]
    assert sorted(r["rewrite"] for r in report["optimize"]["rewrites"]) == \
        ["drop_identity"] + ["fold_batchnorm"] * 2 + ["fuse_activation"] * 2
    meta = json.loads((tmp_path / "opt" / "model.json").read_text())["userDefinedMetadata"]["flax2tfjs"]
    assert meta["optimize"]["rewrites"] == report["optimize"]["rewrites"]
    literal_meta = json.loads((tmp_path / "literal" / "model.json").read_text())["userDefinedMetadata"]["flax2tfjs"]
    assert literal_meta["optimize"] == {"enabled": False, "rewrites": []}
    # Same input, same bytes: folded weights are computed deterministically.
    assert main([args[0], str(tmp_path / "again"), *args[1:], "--quiet"]) == 0
    for path in sorted((tmp_path / "opt").iterdir()):
        assert path.read_bytes() == (tmp_path / "again" / path.name).read_bytes(), path.name
    assert main([args[0], str(tmp_path / "text"), *args[1:]]) == 0
    assert "optimized[fold_batchnorm]: BatchNorm_0 -> Conv_0" in capsys.readouterr().out


def test_verify_passes_on_an_optimized_model_and_lists_the_rewrites(tmp_path, capsys, bn_checkpoint):
    checkpoint, module = bn_checkpoint
    assert main([str(checkpoint), str(tmp_path / "opt"), "--module", module, "--input-shape", "10,10,3", "--quiet"]) == 0
    assert main(["verify", str(tmp_path / "opt"), str(checkpoint), "--module", module, "--samples", "8", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    schema = json.loads((ROOT / "schemas" / "verify.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(document)
    assert document["passed"] and document["weights"]["mismatches"] == []
    assert document["weights"]["checked"] == 6  # two folded kernels and biases, the Dense's two
    assert document["optimize"]["enabled"] and len(document["optimize"]["rewrites"]) == 5
    assert main(["verify", str(tmp_path / "opt"), str(checkpoint), "--module", module, "--samples", "4"]) == 0
    assert "optimized[drop_identity]: Dropout_0 -> " in capsys.readouterr().out


def test_inspect_shows_the_optimized_graph_unless_no_optimize(capsys, bn_checkpoint):
    checkpoint, module = bn_checkpoint
    graphs = {}
    for flag in ("--optimize", "--no-optimize"):
        assert main(["inspect", str(checkpoint), "--module", module, "--input-shape", "10,10,3", "--json", flag]) == 0
        graphs[flag] = [layer["class_name"] for layer in json.loads(capsys.readouterr().out)["graph"]["layers"]]
    assert graphs["--optimize"] == ["Conv2D", "Conv2D", "GlobalAveragePooling2D", "Dense"]
    assert graphs["--no-optimize"].count("BatchNormalization") == 2
