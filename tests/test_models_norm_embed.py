"""Whole models with normalization and embeddings, Linen and NNX, run in real TF.js against JAX.

A small ResNet (conv-BN-relu blocks, identity and projection skips, global
average pool, dense head) and an embedding text classifier, with trained-looking
random variables (BatchNorm statistics included); batch 1 and 4. The ResNet
also goes through a checkpoint on disk (flax msgpack and orbax), and a
checkpoint without its batch statistics must stop with a clear error.
"""
from __future__ import annotations

import re

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests import flax_models as fm
from tests.jax_reference import compare_batches, random_inputs, redraw, trained_looking
from writer import ConversionError, to_tensorflowjs

IMAGE = (12, 12, 3)
TOKENS = 10
VOCAB = 40


# -- models -----------------------------------------------------------------
class ResBlock(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.Conv(self.features, (3, 3), strides=self.strides, use_bias=False)(x)
        y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
        y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
        y = nn.BatchNorm(use_running_average=not train)(y)
        if x.shape != y.shape:  # projection skip
            x = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False, name="proj")(x)
            x = nn.BatchNorm(use_running_average=not train, name="proj_bn")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    classes: int = 5

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(8, (3, 3), use_bias=False)(x)))
        x = ResBlock(8)(x, train)  # identity skip
        x = ResBlock(16, strides=2)(x, train)  # projection skip
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.classes)(x)


class NnxResBlock(nnx.Module):
    def __init__(self, features_in: int, features: int, strides: int, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(features_in, features, (3, 3), strides=strides, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(features, rngs=rngs)
        self.conv2 = nnx.Conv(features, features, (3, 3), use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(features, rngs=rngs)
        if strides != 1 or features_in != features:
            self.proj = nnx.Conv(features_in, features, (1, 1), strides=strides, use_bias=False, rngs=rngs)
            self.proj_bn = nnx.BatchNorm(features, rngs=rngs)
        else:
            self.proj = None

    def __call__(self, x):
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.proj is not None:
            x = self.proj_bn(self.proj(x))
        return nnx.relu(x + y)


class NnxResNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, classes: int = 5):
        self.stem = nnx.Conv(3, 8, (3, 3), use_bias=False, rngs=rngs)
        self.stem_bn = nnx.BatchNorm(8, rngs=rngs)
        self.block1 = NnxResBlock(8, 8, 1, rngs)
        self.block2 = NnxResBlock(8, 16, 2, rngs)
        self.head = nnx.Linear(16, classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.stem_bn(self.stem(x)))
        x = self.block2(self.block1(x))
        return self.head(x.mean(axis=(1, 2)))


class TextClassifier(nn.Module):
    """Embed -> LayerNorm -> Dropout -> mean over tokens -> Dense-relu-Dense."""

    @nn.compact
    def __call__(self, ids, train: bool = False):
        x = nn.Embed(VOCAB, 16)(ids)
        x = nn.Dropout(0.1, deterministic=not train)(nn.LayerNorm()(x))
        x = nn.relu(nn.Dense(12)(jnp.mean(x, axis=1)))
        return nn.Dense(3)(x)


class NnxTextClassifier(nnx.Module):
    """Embed -> flatten -> Linear-relu -> Dropout -> Linear."""

    def __init__(self, rngs: nnx.Rngs, dropout_rngs: nnx.Rngs | None = None):
        self.embed = nnx.Embed(VOCAB, 8, rngs=rngs)
        self.hidden = nnx.Linear(TOKENS * 8, 12, rngs=rngs)
        self.dropout = nnx.Dropout(0.2, rngs=dropout_rngs)
        self.out = nnx.Linear(12, 3, rngs=rngs)

    def __call__(self, ids):
        x = self.embed(ids).reshape((ids.shape[0], -1))
        return self.out(self.dropout(nnx.relu(self.hidden(x))))


# -- trained-looking variables ---------------------------------------------
def _linen_variables(module: nn.Module, example: np.ndarray) -> dict:
    variables = module.init(jax.random.PRNGKey(0), jnp.asarray(example))
    return redraw(jax.tree_util.tree_map(np.asarray, flax.core.unfreeze(variables)), trained_looking, seed=7)


def _nnx_trained(model: nnx.Module) -> nnx.Module:
    nnx.update(model, redraw(nnx.state(model), trained_looking, seed=7))
    model.eval()
    return model


def _images(batch: int, seed: int) -> np.ndarray:
    return random_inputs([IMAGE], batch, seed)[0]


def _ids(batch: int, seed: int) -> np.ndarray:
    return random_inputs([(TOKENS,)], batch, seed, "int32", 0, VOCAB)[0]


def _check(tfjs, out, run_jax, make_input) -> float:
    return compare_batches(tfjs, out, lambda xs: run_jax(xs[0]), lambda batch: [make_input(batch, 10 + batch)], (1, 4))


# -- ResNet -----------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet_variables():
    return _linen_variables(ResNet(), _images(1, 0))


def _run_resnet(variables):
    return lambda x: np.asarray(ResNet().apply(variables, jnp.asarray(x), train=False))


def test_linen_resnet_matches_jax(tmp_path, tfjs, resnet_variables):
    report = to_tensorflowjs(ResNet(), tmp_path / "out", variables=resnet_variables, input_shape=IMAGE,
                             optimize=False)  # the literal graph: BatchNormalization layers in tfjs
    classes = [layer.class_name for layer in report.layers]
    assert classes.count("BatchNormalization") == 6  # stem, 2 per block, the projection's
    assert classes.count("Add") == 2 and "GlobalAveragePooling2D" in classes
    _check(tfjs, tmp_path / "out", _run_resnet(resnet_variables), _images)


def test_nnx_resnet_matches_jax(tmp_path, tfjs):
    model = _nnx_trained(NnxResNet(nnx.Rngs(0)))
    report = to_tensorflowjs(model, tmp_path / "out", input_shape=IMAGE)  # --optimize (the default)
    assert "BatchNormalization" not in [layer.class_name for layer in report.layers]
    assert [r["rewrite"] for r in report.rewrites].count("fold_batchnorm") == 6
    _check(tfjs, tmp_path / "out", lambda x: np.asarray(model(jnp.asarray(x))), _images)


@pytest.mark.parametrize("fmt", ["msgpack", "orbax"])
def test_resnet_checkpoint_round_trip(tmp_path, tfjs, resnet_variables, fmt):
    assert set(resnet_variables) == {"params", "batch_stats"}
    if fmt == "msgpack":
        path = fm.save_msgpack(resnet_variables, tmp_path / "resnet.msgpack")
    else:
        path = fm.save_orbax(resnet_variables, tmp_path / "resnet_orbax")
    to_tensorflowjs(path, tmp_path / "out", module=ResNet(), input_shape=IMAGE)
    _check(tfjs, tmp_path / "out", _run_resnet(resnet_variables), _images)


def test_nnx_resnet_checkpoint_round_trip(tmp_path, tfjs):
    trained = _nnx_trained(NnxResNet(nnx.Rngs(0)))
    path = fm.save_orbax(nnx.state(trained).to_pure_dict(), tmp_path / "nnx_orbax")
    to_tensorflowjs(path, tmp_path / "out", module=NnxResNet(nnx.Rngs(1)), input_shape=IMAGE)  # fresh weights
    _check(tfjs, tmp_path / "out", lambda x: np.asarray(trained(jnp.asarray(x))), _images)


def test_checkpoint_without_batch_stats_names_what_is_missing(tmp_path, resnet_variables):
    path = fm.save_msgpack({"params": resnet_variables["params"]}, tmp_path / "params_only.msgpack")
    with pytest.raises(ConversionError) as caught:
        to_tensorflowjs(path, tmp_path / "out", module=ResNet(), input_shape=IMAGE)
    assert caught.value.code in ("MISSING_COLLECTION", "MISSING_PARAMETER")
    assert "batch_stats" in str(caught.value) and "BatchNorm_0" in str(caught.value)
    assert not (tmp_path / "out").exists()  # no partial output


def test_nnx_checkpoint_without_batch_stats_names_what_is_missing(tmp_path):
    state = nnx.state(_nnx_trained(NnxResNet(nnx.Rngs(0))), nnx.Param).to_pure_dict()
    path = fm.save_orbax(state, tmp_path / "params_only")
    with pytest.raises(ConversionError) as caught:
        to_tensorflowjs(path, tmp_path / "out", module=NnxResNet(nnx.Rngs(0)), input_shape=IMAGE)
    assert caught.value.code in ("MISSING_COLLECTION", "MISSING_PARAMETER")
    assert re.search(r"batch_stats/\S*bn\S*/mean", str(caught.value))
    assert not (tmp_path / "out").exists()


# -- text classifier -------------------------------------------------------
def test_linen_text_classifier_matches_jax(tmp_path, tfjs):
    variables = _linen_variables(TextClassifier(), _ids(1, 0))
    report = to_tensorflowjs(TextClassifier(), tmp_path / "out", variables=variables, input_shape=(TOKENS,),
                             input_dtype="int32", optimize=False)  # the literal graph keeps its Dropout
    classes = [layer.class_name for layer in report.layers]
    # LayerNorm over the features: the tile-free composition (Dot with normalize=True), not tfjs' LayerNormalization
    assert classes[0] == "Embedding" and {"Dot", "Dropout", "GlobalAveragePooling1D"} <= set(classes)
    assert "LayerNormalization" not in classes
    _check(tfjs, tmp_path / "out", lambda x: np.asarray(TextClassifier().apply(variables, jnp.asarray(x))), _ids)


def test_nnx_text_classifier_matches_jax(tmp_path, tfjs):
    model = _nnx_trained(NnxTextClassifier(nnx.Rngs(0)))
    report = to_tensorflowjs(model, tmp_path / "out", input_shape=(TOKENS,), input_dtype="int32")
    assert [layer.class_name for layer in report.layers][:2] == ["Embedding", "Flatten"]
    _check(tfjs, tmp_path / "out", lambda x: np.asarray(model(jnp.asarray(x))), _ids)


def test_nnx_dropout_with_rng_stream_converts(tmp_path, tfjs):
    model = _nnx_trained(NnxTextClassifier(nnx.Rngs(0), dropout_rngs=nnx.Rngs(dropout=1)))
    to_tensorflowjs(model, tmp_path / "out", input_shape=(TOKENS,), input_dtype="int32")
    _check(tfjs, tmp_path / "out", lambda x: np.asarray(model(jnp.asarray(x))), _ids)


# -- layers fixed in training mode -------------------------------------------
class FixedTrainBN(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.BatchNorm(use_running_average=False)(nn.Dense(4)(x))


class FixedTrainDropout(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dropout(0.5, deterministic=False)(nn.Dense(4)(x))


class NnxCallFlags(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, flag: str):
        self.linear = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.flag = flag

    def __call__(self, x):
        x = self.bn(self.linear(x), use_running_average=self.flag != "bn")
        return self.dropout(x, deterministic=self.flag != "dropout")


@pytest.mark.parametrize("model, names", [(FixedTrainBN, ("BatchNorm_0", "batch_stats")),
                                          (FixedTrainDropout, ("Dropout_0", "dropout"))], ids=["bn", "dropout"])
def test_linen_layer_fixed_in_training_mode_is_refused(tmp_path, model, names):
    keys = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    variables = model().init(keys, jnp.ones((2, 3)))
    with pytest.raises(ConversionError) as caught:
        to_tensorflowjs(model(), tmp_path / "out", variables=variables, input_shape=(3,))
    assert caught.value.code == "TRAINING_MODE"
    assert all(name in str(caught.value) for name in names)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, words", [("bn", "use_running_average=False"), ("dropout", "deterministic=False")])
def test_nnx_call_in_training_mode_is_refused(tmp_path, flag, words):
    with pytest.raises(ConversionError) as caught:
        to_tensorflowjs(NnxCallFlags(nnx.Rngs(0), flag), tmp_path / "out", input_shape=(3,))
    assert caught.value.code == "TRAINING_MODE"
    assert words in str(caught.value) and flag in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_nnx_groupnorm_with_other_reduction_axes_is_refused(tmp_path):
    model = nnx.GroupNorm(4, num_groups=2, reduction_axes=-1, rngs=nnx.Rngs(0))
    with pytest.raises(ConversionError) as caught:
        to_tensorflowjs(model, tmp_path / "out", input_shape=(5, 4))
    assert caught.value.code == "UNSUPPORTED_OPERATION" and "reduction_axes" in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layer, shape, words", [
    (lambda: nn.BatchNorm(use_running_average=True, axis=(1, 2)), (3, 4, 2), "several feature axes"),
    (lambda: nn.RMSNorm(reduction_axes=1, feature_axes=-1), (3, 4), "RMSNorm"),
], ids=["batchnorm-two-axes", "rmsnorm-mixed-axes"])
def test_unsupported_normalization_axes_are_refused(tmp_path, layer, shape, words):
    class Wrap(nn.Module):
        @nn.compact
        def __call__(self, x):
            return layer()(x)

    variables = Wrap().init(jax.random.PRNGKey(0), jnp.ones((1, *shape)))
    with pytest.raises(ConversionError) as caught:
        to_tensorflowjs(Wrap(), tmp_path / "out", variables=variables, input_shape=shape)
    assert caught.value.code == "UNSUPPORTED_OPERATION" and words in str(caught.value)
    assert not (tmp_path / "out").exists()
