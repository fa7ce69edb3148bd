"""Whole convolutional models traced from their code, run in real TF.js (Node) against JAX.

Linen and NNX versions of a 1-D conv sequence model, a depthwise-separable
block and a ConvTranspose decoder; the bundled MNIST CNN from its module and
Orbax checkpoint on real digits; a model with two inputs. Each runs with batch
1 and 4. Also: unsupported operations stop the conversion naming the user's
file:line, and docs/supported-layers.md is what the generator writes.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from tests.conftest import ROOT, assert_close
from tests.jax_reference import compare_batches, nudge, random_inputs, redraw, write_results
from writer import to_tensorflowjs
from topology.vocabulary.errors import ConversionError

RESULTS: dict[str, float] = {}
BATCHES = (1, 4)


# -- models ------------------------------------------------------------------
class Sequence1D(nn.Module):
    """Conv1D stack (SAME, dilated, causal) + max pool + global average + Dense."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (5,))(x))
        x = nn.max_pool(x, (2,), strides=(2,))
        x = nn.relu(nn.Conv(12, (3,), kernel_dilation=2)(x))
        x = nn.gelu(nn.Conv(12, (3,), padding="CAUSAL")(x))
        return nn.Dense(3)(jnp.mean(x, axis=1))


class NnxSequence1D(nnx.Module):
    def __init__(self, channels: int = 2, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.conv1 = nnx.Conv(channels, 8, (5,), rngs=rngs)
        self.conv2 = nnx.Conv(8, 12, (3,), kernel_dilation=2, rngs=rngs)
        self.head = nnx.Linear(12, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv1(x))
        x = nnx.max_pool(x, (2,), strides=(2,))
        x = nnx.relu(self.conv2(x))
        return self.head(x.max(axis=1))


class SeparableBlock(nn.Module):
    """Depthwise conv (feature_group_count = channels) then a 1x1 conv, twice, then a head."""

    @nn.compact
    def __call__(self, x):
        for width, stride in ((8, 1), (16, 2)):
            channels = x.shape[-1]
            x = nn.Conv(channels, (3, 3), strides=stride, feature_group_count=channels)(x)
            x = nn.relu6(x)
            x = nn.relu(nn.Conv(width, (1, 1))(x))
        return nn.Dense(4)(jnp.mean(x, axis=(1, 2)))


class NnxSeparableBlock(nnx.Module):
    def __init__(self, channels: int = 4, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.depthwise = nnx.Conv(channels, channels, (3, 3), feature_group_count=channels, rngs=rngs)
        self.pointwise = nnx.Conv(channels, 8, (1, 1), rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.pointwise(nnx.relu(self.depthwise(x))))


class Decoder(nn.Module):
    """Dense -> reshape -> ConvTranspose stride 2 -> ConvTranspose stride 2 -> sigmoid."""

    @nn.compact
    def __call__(self, z):
        x = nn.relu(nn.Dense(7 * 7 * 8)(z)).reshape((z.shape[0], 7, 7, 8))
        x = nn.relu(nn.ConvTranspose(8, (3, 3), strides=(2, 2))(x))
        return nn.sigmoid(nn.ConvTranspose(1, (3, 3), strides=(2, 2))(x))


class NnxDecoder(nnx.Module):
    def __init__(self, latent: int = 6, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.dense = nnx.Linear(latent, 4 * 4 * 8, rngs=rngs)
        self.up1 = nnx.ConvTranspose(8, 8, (4, 4), strides=(2, 2), rngs=rngs)
        self.up2 = nnx.ConvTranspose(8, 1, (3, 3), strides=(2, 2), padding="VALID", rngs=rngs)

    def __call__(self, z):
        x = nnx.relu(self.dense(z)).reshape((z.shape[0], 4, 4, 8))
        return nnx.sigmoid(self.up2(nnx.relu(self.up1(x))))


class TwoInputs(nn.Module):
    @nn.compact
    def __call__(self, a, b):
        x = jnp.concatenate([nn.relu(nn.Dense(5)(a)), b], axis=-1)
        return nn.softmax(nn.Dense(3)(x))


class NnxTwoInputs(nnx.Module):
    def __init__(self, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.a = nnx.Linear(4, 5, rngs=rngs)
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, a, b):
        return self.out(jnp.concatenate([nnx.relu(self.a(a)), b], axis=-1))


# -- helpers -----------------------------------------------------------------
def _linen(module, shapes):
    zeros = [jnp.zeros((1, *s), jnp.float32) for s in shapes]
    variables = redraw(module.init(jax.random.PRNGKey(0), *zeros), nudge(0.1), seed=1)
    return variables, lambda xs: np.asarray(module.apply(variables, *[jnp.asarray(x) for x in xs]))


def _nnx(model):
    nnx.update(model, redraw(nnx.state(model), nudge(0.1), seed=1))
    model.eval()
    return lambda xs: np.asarray(model(*[jnp.asarray(x) for x in xs]))


def _compare(tfjs, out: Path, run_jax, shapes, name: str) -> None:
    make_inputs = lambda batch: random_inputs(shapes, batch, seed=batch, low=-1, high=1)  # noqa: E731
    RESULTS[name] = compare_batches(tfjs, out, run_jax, make_inputs, BATCHES)


def _classes(out: Path) -> list[str]:
    topology = json.loads((out / "model.json").read_text())["modelTopology"]["model_config"]
    return [layer["class_name"] for layer in topology["config"]["layers"]]


LINEN = {
    "sequence1d": (Sequence1D, [(24, 2)]),
    "separable": (SeparableBlock, [(9, 9, 4)]),
    "decoder": (Decoder, [(6,)]),
    "two-inputs": (TwoInputs, [(4,), (3,)]),
}
NNX = {
    "sequence1d": (NnxSequence1D, [(24, 2)]),
    "separable": (NnxSeparableBlock, [(9, 9, 4)]),
    "decoder": (NnxDecoder, [(6,)]),
    "two-inputs": (NnxTwoInputs, [(4,), (3,)]),
}
EXPECTED_LAYERS = {  # a layer each model must have become, so that the comparison tests that construct
    "sequence1d": "Conv1D", "separable": "DepthwiseConv2D", "decoder": "Conv2DTranspose", "two-inputs": "Concatenate",
}


def _shape_option(shapes):
    return shapes if len(shapes) > 1 else shapes[0]


# -- tests -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LINEN))
def test_linen_model_matches_jax(tmp_path, tfjs, name):
    build, shapes = LINEN[name]
    module = build()
    variables, run_jax = _linen(module, shapes)
    out = tmp_path / "out"
    to_tensorflowjs(module, out, variables=variables, input_shape=_shape_option(shapes))
    assert EXPECTED_LAYERS[name] in _classes(out)
    _compare(tfjs, out, run_jax, shapes, f"linen-{name}")


@pytest.mark.parametrize("name", sorted(NNX))
def test_nnx_model_matches_jax(tmp_path, tfjs, name):
    build, shapes = NNX[name]
    model = build()
    run_jax = _nnx(model)
    out = tmp_path / "out"
    to_tensorflowjs(model, out, input_shape=_shape_option(shapes))
    assert EXPECTED_LAYERS[name] in _classes(out)
    _compare(tfjs, out, run_jax, shapes, f"nnx-{name}")


def test_two_inputs_keep_their_order(tmp_path, tfjs):
    """Swapping the two inputs changes the tfjs result like it changes JAX's: input order is kept."""
    module = TwoInputs()
    variables, run_jax = _linen(module, [(4,), (3,)])
    out = tmp_path / "out"
    to_tensorflowjs(module, out, variables=variables, input_shape=[(4,), (3,)])
    config = json.loads((out / "model.json").read_text())["modelTopology"]["model_config"]["config"]
    shapes = {layer["name"]: layer["config"]["batch_input_shape"] for layer in config["layers"]
              if layer["class_name"] == "InputLayer"}
    assert [shapes[name] for name, _, _ in config["input_layers"]] == [[None, 4], [None, 3]]


def test_mnist_cnn_from_module_and_checkpoint_on_real_digits(tmp_path, tfjs):
    import orbax.checkpoint as ocp

    from examples.mnist_data import load_mnist
    from examples.train_mnist import CNN, mnist_cnn_apply

    checkpoint = ROOT / "examples" / "mnist_ckpt"
    out = tmp_path / "mnist"
    report = to_tensorflowjs(checkpoint, out, module=CNN, input_shape=(28, 28, 1))
    # --optimize fuses each relu into its layer: the official converter's layers for the Keras twin.
    assert _classes(out) == ["InputLayer", "Conv2D", "AveragePooling2D", "Conv2D",
                             "AveragePooling2D", "Flatten", "Dense", "Dense"]
    assert report.format == "orbax"
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(checkpoint.absolute())["params"]
    _, _, x_test, y_test = load_mnist()
    worst = 0.0
    for batch in BATCHES:
        digits = x_test[::250][:batch]  # real digits of different classes
        expected = np.asarray(mnist_cnn_apply(params, digits))
        logits = tfjs.predict(out, [digits]).outputs[0]
        worst = max(worst, assert_close(logits, expected))
        assert (np.argmax(logits, 1) == np.argmax(expected, 1)).all()
    # the checkpoint is trained: the digits are recognised
    eight = x_test[::250][:8]
    assert np.mean(np.argmax(tfjs.predict(out, [eight]).outputs[0], 1) == y_test[::250][:8]) >= 0.75
    RESULTS["linen-mnist-cnn-checkpoint"] = worst


# -- unsupported operations ----------------------------------------------------
class Unsupported(nn.Module):
    op: str

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4)(x)
        if self.op == "cummax":  # (cumsum converts: a triangular Dense, topology/ops/structural.py)
            x = jax.lax.cummax(x, axis=1)  # marker: cummax
        elif self.op == "sort":
            x = jnp.sort(x, axis=-1)  # marker: sort
        elif self.op == "matmul":
            x = x @ x.T  # marker: matmul
        return x


class NnxUnsupported(nnx.Module):
    def __init__(self):
        self.linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return jnp.sort(self.linear(x), axis=-1)  # marker: nnx-sort


def _line_of(marker: str) -> str:
    lines = Path(__file__).read_text().splitlines()
    [number] = [i + 1 for i, line in enumerate(lines) if line.endswith(f"# marker: {marker}")]
    return f"{Path(__file__).name}:{number}"


@pytest.mark.parametrize("op, names", [("cummax", "cummax"), ("sort", "sort"), ("matmul", "transpose")])
def test_unsupported_operation_names_it_and_the_users_line(tmp_path, op, names):
    module = Unsupported(op)
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as info:
        to_tensorflowjs(module, out, variables=variables, input_shape=(3,))
    assert info.value.code == "UNSUPPORTED_OPERATION"
    assert names in str(info.value)
    assert _line_of(op) in str(info.value)
    assert not out.exists()


def test_unsupported_operation_in_nnx_names_the_users_line(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as info:
        to_tensorflowjs(NnxUnsupported(), out, input_shape=(3,))
    assert info.value.code == "UNSUPPORTED_OPERATION"
    assert "`sort`" in str(info.value) and _line_of("nnx-sort") in str(info.value)
    assert not out.exists()


# -- docs ----------------------------------------------------------------------
def test_supported_layers_doc_is_generated_from_the_registry():
    spec = importlib.util.spec_from_file_location("gen_supported_layers", ROOT / "scripts" / "gen_supported_layers.py")
    generator = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generator  # its Flax dataclasses look their module up by name
    spec.loader.exec_module(generator)
    text = generator.render()
    from topology.layers import REGISTRY

    assert all(f"| {key} |" in text for key in REGISTRY)  # the generator covers every registered kind
    committed = (ROOT / "docs" / "supported-layers.md").read_text(encoding="utf-8")
    assert committed == text, "docs/supported-layers.md is stale: run python scripts/gen_supported_layers.py"


def test_zz_write_model_results():
    """Keep the largest difference per case for the docs (runs after the models)."""
    write_results(RESULTS, "models_conv", "models")
