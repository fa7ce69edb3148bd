"""GraphModels of whole models, run in real TF.js against JAX: a Llama-style decoder, a T5-style
encoder, a RoBERTa-style classifier, a ResNet and a ViT (tiny sizes); ``--format auto`` on each;
an NNX module; the CLI with --verify; determinism; the errors."""
from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, serialization

from examples.models.llama_decoder import Llama
from examples.models.resnet import ResNet
from examples.models.roberta_classifier import Roberta
from examples.models.t5_encoder import T5Encoder
from examples.models.vit import ViT
from tests.conftest import ROOT, assert_close
from topology.graph import InputSpec
from topology.vocabulary.errors import ConversionError
from writer import to_tensorflowjs
from writer.convert import convert_function
from writer.tfjs_files import read_model_json

RESULTS: dict[str, tuple[float, float]] = {}

MODELS = {  # name: (module, input shape, dtype, layers emitter accepts it)
    "llama": (Llama(), (12,), "int32", False),
    "t5": (T5Encoder(), (12,), "int32", False),
    "roberta": (Roberta(), (12,), "int32", False),
    "resnet": (ResNet(), (32, 32, 3), "float32", True),
    "vit": (ViT(), (32, 32, 3), "float32", True),
}


def _inputs(shape, dtype, batch, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "int32":
        ids = rng.integers(2, 60, size=(batch, *shape)).astype("int32")
        ids[0, -3:] = 1  # padding for the RoBERTa mask and positions
        return ids
    return rng.standard_normal((batch, *shape)).astype("float32")


def random_variables(module, x, seed=1):
    """Random variables of the module's shapes (no compiled init: fast); variances kept positive."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
        return (rng.standard_normal(leaf.shape) * 0.2).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def initialised():
    return {name: random_variables(module, _inputs(shape, dtype, 1)) for name, (module, shape, dtype, _) in MODELS.items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_graph_model_matches_jax(tmp_path, tfjs, initialised, name):
    module, shape, dtype, _ = MODELS[name]
    variables = initialised[name]
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=shape, input_dtype=dtype,
                             format="graph-model")
    assert report.topology == "graph-model"
    document = read_model_json(tmp_path / "out")
    assert document["format"] == "graph-model" and "signature" in document
    x = _inputs(shape, dtype, 3)  # any batch: the graph's batch axis is dynamic
    want = np.asarray(module.apply(variables, x))
    got = tfjs.predict(tmp_path / "out", [x]).outputs[0]
    error = assert_close(got, want, rtol=2e-5)
    top1 = float(np.mean(got.reshape(-1, got.shape[-1]).argmax(-1) == want.reshape(-1, want.shape[-1]).argmax(-1)))
    RESULTS[name] = (error, top1)
    assert top1 == 1.0


@pytest.mark.parametrize("name", list(MODELS))
def test_auto_writes_a_layers_model_when_it_can(tmp_path, tfjs, initialised, name):
    module, shape, dtype, layers_ok = MODELS[name]
    variables = initialised[name]
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=shape, input_dtype=dtype,
                             format="auto")
    notices = [n for n in report.notices if n.code == "FORMAT_AUTO"]
    if layers_ok:
        assert report.topology == "traced" and not notices
    else:
        assert report.topology == "graph-model" and "LayersModel emitter refused" in notices[0].message
    x = _inputs(shape, dtype, 2)
    assert_close(tfjs.predict(tmp_path / "out", [x]).outputs[0], np.asarray(module.apply(variables, x)), rtol=2e-5)


class SortingNNX(nnx.Module):
    """Sorting, top-k and a gather over data: nothing Keras layers express."""

    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(6, 6, rngs=rngs)

    def __call__(self, x):
        h = self.linear(x)
        values, index = jax.lax.top_k(h, 3)
        return jnp.sort(h, axis=-1)[:, :3] + values + jnp.take_along_axis(x, index, axis=-1)


def test_nnx_module_as_graph_model(tmp_path, tfjs):
    model = SortingNNX(nnx.Rngs(0))
    to_tensorflowjs(model, tmp_path / "out", input_shape=(6,), format="graph-model")
    x = _inputs((6,), "float32", 4)
    assert_close(tfjs.predict(tmp_path / "out", [x]).outputs[0], np.asarray(model(x)))


def test_output_is_byte_identical_twice(tmp_path, initialised):
    module, shape, dtype, _ = MODELS["llama"]
    for out in ("a", "b"):
        to_tensorflowjs(module, tmp_path / out, variables=initialised["llama"], input_shape=shape, input_dtype=dtype,
                        format="graph-model", quantize="uint8")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir()) and len(names) >= 3
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", names, shallow=False)
    assert not mismatch and not errors


def test_quantized_graph_model_quantizes_parameters_only(tmp_path, tfjs, initialised):
    module, shape, dtype, _ = MODELS["t5"]
    to_tensorflowjs(module, tmp_path / "out", variables=initialised["t5"], input_shape=shape, input_dtype=dtype,
                    format="graph-model", quantize="float16")
    groups = read_model_json(tmp_path / "out")["weightsManifest"]
    assert all("quantization" in w for w in groups[0]["weights"])
    assert not any("quantization" in w for w in groups[1]["weights"])  # folded constants stay exact
    x = _inputs(shape, dtype, 2)
    got = tfjs.predict(tmp_path / "out", [x]).outputs[0]
    assert_close(got, np.asarray(module.apply(initialised["t5"], x)), rtol=5e-3)


def test_cli_converts_and_verifies_a_graph_model(tmp_path):
    module, shape, dtype, _ = MODELS["roberta"]
    variables = random_variables(module, _inputs(shape, dtype, 1), seed=2)
    checkpoint = tmp_path / "roberta.msgpack"
    checkpoint.write_bytes(serialization.to_bytes(variables))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "writer", str(checkpoint), str(tmp_path / "out"), "--module",
                          "examples/models/roberta_classifier.py:Roberta", "--input-shape", "12", "--input-dtype",
                          "int32", "--format", "graph-model", "--verify", "--samples", "8", "--quiet"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert read_model_json(tmp_path / "out")["format"] == "graph-model"
    missing = subprocess.run([sys.executable, "-m", "writer", str(checkpoint), str(tmp_path / "out2"), "--format",
                              "graph-model"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "error[GRAPH_MODEL_NEEDS_MODULE]" in missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "out2").exists()


def test_inspect_reports_the_graph_model_it_would_write(tmp_path):
    import json

    import jsonschema

    from writer.convert import ConvertOptions
    from writer.commands.inspect import inspect_checkpoint

    module, shape, dtype, _ = MODELS["roberta"]
    checkpoint = tmp_path / "roberta.msgpack"
    checkpoint.write_bytes(serialization.to_bytes(random_variables(module, _inputs(shape, dtype, 1))))
    options = ConvertOptions(module="examples/models/roberta_classifier.py:Roberta", input_shape=shape,
                             input_dtype=dtype, format="auto")
    report = inspect_checkpoint(checkpoint, options)
    document = report.to_json()
    schema = json.loads((ROOT / "schemas" / "inspect.schema.json").read_text())
    jsonschema.validate(document, schema)
    assert document["graph"] is None and document["graph_model"]["ops"]["Cumsum"] == 1
    assert any(n["code"] == "FORMAT_AUTO" for n in document["notices"])
    assert "GraphModel that would be written" in report.render()


def test_unknown_primitive_names_it_and_the_users_line(tmp_path):
    with pytest.raises(ConversionError) as caught:
        convert_function(lambda x: jax.lax.cummax(x, axis=1), tmp_path / "out", [InputSpec("x", (4,))])
    assert caught.value.code == "GRAPH_UNSUPPORTED_PRIMITIVE"
    assert "'cummax'" in caught.value.message and "test_graph_model_e2e.py:" in caught.value.message
    assert not (tmp_path / "out").exists()


def test_format_is_checked():
    with pytest.raises(ConversionError) as caught:
        to_tensorflowjs(nn.Dense(2), "unused", variables={}, format="graph")
    assert caught.value.code == "BAD_OPTION" and "graph-model" in caught.value.hint


class ConvBatchNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(4, (3, 3))(x)))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_rewrites_fold_batchnorm_and_fuse_bias_and_relu(tmp_path, tfjs):
    module = ConvBatchNorm()
    x = _inputs((5, 5, 2), "float32", 2)
    variables = random_variables(module, x)
    want = np.asarray(module.apply(variables, x))
    for optimize in (True, False):
        out = tmp_path / f"optimize_{optimize}"
        report = to_tensorflowjs(module, out, variables=variables, input_shape=(5, 5, 2), format="graph-model",
                                 optimize=optimize)
        ops = [n["op"] for n in read_model_json(out)["modelTopology"]["node"]]
        if optimize:
            assert "_FusedConv2D" in ops and "_FusedMatMul" in ops
            assert not {"Sub", "Mul", "Rsqrt", "Maximum"} & set(ops)  # BatchNorm and ReLU are inside the conv
            assert {r["rewrite"] for r in report.rewrites} == {"relu", "fold_affine", "fuse_activation"}
        else:
            assert "Conv2D" in ops and not any(op.startswith("_Fused") for op in ops) and not report.rewrites
        assert_close(tfjs.predict(out, [x]).outputs[0], want)


class PoolThenHeads(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))  # a window sum times 4, divided by 4
        q = nn.DenseGeneral((2, 4))(x.reshape(x.shape[0], 9, 2))  # the bias has the heads' shape (2, 4)
        return q / 2.0  # attention's 1/sqrt(d)


def test_rewrites_cancel_pooling_scale_and_fold_a_heads_shaped_bias_and_scale(tmp_path, tfjs):
    module = PoolThenHeads()
    x = _inputs((6, 6, 2), "float32", 3)
    variables = random_variables(module, x)
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=(6, 6, 2), format="graph-model")
    ops = [n["op"] for n in read_model_json(tmp_path / "out")["modelTopology"]["node"]]
    assert "_FusedMatMul" in ops and not {"Mul", "RealDiv", "AddV2"} & set(ops), ops
    assert {r["rewrite"] for r in report.rewrites} == {"cancel_scale", "fold_affine"}
    assert_close(tfjs.predict(tmp_path / "out", [x]).outputs[0], np.asarray(module.apply(variables, x)))


class NormedProjection(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x * 3.0 + 5.0)  # an offset mean: the variance formula matters
        return nn.Dense(3)(h) - nn.Dense(3)(h)  # both flatten h to 2-D the same way: one Reshape


def test_layernorm_becomes_mean_of_squared_deviation_with_its_affine_in_the_matmuls(tmp_path, tfjs):
    module = NormedProjection()
    x = _inputs((4, 6), "float32", 3)
    variables = random_variables(module, x)
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=(4, 6), format="graph-model")
    ops = [n["op"] for n in read_model_json(tmp_path / "out")["modelTopology"]["node"]]
    assert ops.count("Mean") == 2 and not {"Sum", "Relu", "Maximum"} & set(ops), ops
    assert {"layernorm_stats", "merge_duplicates", "fold_norm_affine"} <= {r["rewrite"] for r in report.rewrites}
    assert ops.count("Mul") == 2 and ops.count("AddV2") == 2, ops  # x * 3 + 5, centered * rsqrt, var + eps
    assert ops.count("_FusedMatMul") == 2 and ops.count("Reshape") == 3, ops  # h to 2-D once, each product back
    assert_close(tfjs.predict(tmp_path / "out", [x]).outputs[0], np.asarray(module.apply(variables, x)))


class BatchBranching(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(3)(x)
        return y * 2 if x.shape[0] > 1 else y  # needs a concrete batch size


def test_code_needing_a_concrete_batch_gets_a_batch_1_graph(tmp_path, tfjs):
    module = BatchBranching()
    x = _inputs((4,), "float32", 1)
    variables = random_variables(module, x)
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=(4,), format="graph-model")
    assert any(n.code == "GRAPH_FIXED_BATCH" for n in report.notices)
    assert read_model_json(tmp_path / "out")["signature"]["inputs"]["input"]["tensorShape"]["dim"][0]["size"] == "1"
    assert_close(tfjs.predict(tmp_path / "out", [x]).outputs[0], np.asarray(module.apply(variables, x)))


def test_the_demo_tester_loads_and_runs_a_graph_model(tmp_path, initialised):
    import json
    import shutil

    module, shape, dtype, _ = MODELS["roberta"]
    site = tmp_path / "site"
    shutil.copytree(ROOT / "web_demo", site)
    to_tensorflowjs(module, site / "gm", variables=initialised["roberta"], input_shape=shape, input_dtype=dtype,
                    format="graph-model")
    x = _inputs(shape, dtype, 1)
    (tmp_path / "input.json").write_text(json.dumps(x.tolist()))
    run = subprocess.run(["node", str(ROOT / "tests" / "web" / "check_tester_graph.mjs"), str(site), "gm",
                          str(tmp_path / "input.json")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["state"] == "done", report["error"]
    assert "GraphModel" in report["summary"] and "[null, 12] int32" in report["summary"]
    got = np.asarray(report["result"]["outputs"][0]["values"], "float32").reshape(report["result"]["outputs"][0]["shape"])
    assert_close(got, np.asarray(module.apply(initialised["roberta"], x)))


def test_graph_model_runs_in_the_packaged_bundle_like_npm(tmp_path, tfjs, initialised):
    from writer.tfjs_node import TfjsRunner

    module, shape, dtype, _ = MODELS["llama"]
    to_tensorflowjs(module, tmp_path / "out", variables=initialised["llama"], input_shape=shape, input_dtype=dtype,
                    format="graph-model")
    x = _inputs(shape, dtype, 2)
    with TfjsRunner(tfjs="bundle") as bundle:  # what an installed wheel's verify runs (no node_modules)
        assert bundle.source() == "bundle"
        for backend in ("cpu", "wasm"):
            got = bundle.predict(tmp_path / "out", [x], backend=backend).outputs[0]
            assert np.array_equal(got, tfjs.predict(tmp_path / "out", [x], backend=backend).outputs[0])
    assert_close(got, np.asarray(module.apply(initialised["llama"], x)), rtol=2e-5)
