"""End to end through the CLI: a ViT (cls token, learned positions) and a ResNet (standard stem,
per-channel input normalization) saved as checkpoints, converted with ``python -m writer CKPT OUT
--module examples/models/...``, and run in real TF.js against JAX (batch 1 and 3).

The models are ``examples/models/vit.py`` and ``resnet.py`` (HF Flax module style); variables are
randomized (BatchNorm statistics included) so that every weight matters.
"""
from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.serialization import to_bytes

from examples.models.resnet import ResNet
from examples.models.vit import ViT
from tests.conftest import ROOT, assert_close

IMAGE = (32, 32, 3)


def _randomized(variables, seed=0):
    rng = np.random.RandomState(seed)

    def draw(path, leaf):
        leaf = np.asarray(leaf)
        name = str(getattr(path[-1], "key", path[-1]))
        value = rng.normal(0, 0.3, leaf.shape).astype(np.float32)
        return np.abs(value) + 0.5 if name == "var" else value

    return jax.tree_util.tree_map_with_path(draw, variables)


def _convert(tmp_path, module, name: str, extra: tuple[str, ...] = ()):
    variables = _randomized(jax.tree_util.tree_map(np.asarray, module.init(jax.random.PRNGKey(0),
                                                                         jnp.zeros((1, *IMAGE)))))
    ckpt = tmp_path / f"{name}.msgpack"
    ckpt.write_bytes(to_bytes(variables))
    out = tmp_path / f"{name}_tfjs"
    command = [sys.executable, "-m", "writer", str(ckpt), str(out), "--module",
               f"examples/models/{name}.py:{type(module).__name__}", "--input-shape", "32,32,3", *extra]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return variables, out, run


@pytest.mark.parametrize("name, module", [("vit", ViT()), ("resnet", ResNet())], ids=["vit", "resnet"])
def test_checkpoint_converts_through_cli_and_matches_jax(tmp_path, tfjs, name, module):
    variables, out, run = _convert(tmp_path, module, name)
    for batch in (1, 3):
        x = np.random.RandomState(batch).uniform(0, 1, (batch, *IMAGE)).astype(np.float32)
        expected = np.asarray(module.apply(variables, jnp.asarray(x)))
        assert_close(tfjs.predict(out, [x]).outputs[0], expected)
    layers = json.loads((out / "model.json").read_text())["modelTopology"]["model_config"]["config"]["layers"]
    classes = [layer["class_name"] for layer in layers]
    if name == "vit":  # the cls token and the position embeddings are constants read off the patches
        assert "Concatenate" in classes and classes.count("Dense") >= 2
        names = [w["name"] for group in json.loads((out / "model.json").read_text())["weightsManifest"]
                 for w in group["weights"]]
        assert sum(n.startswith("constant") and n.endswith("/bias") for n in names) == 2
    else:  # the stem pool pads explicitly after relu; (x - mean) / std is one BatchNormalization
        assert classes[1] == "BatchNormalization" and "MaxPooling2D" in classes
        pool = classes.index("MaxPooling2D")
        assert classes[pool - 1] == "ZeroPadding2D" and classes[pool - 2] == "ReLU"


def test_quantized_vit_stays_close(tmp_path, tfjs):
    module = ViT()
    variables, out, _ = _convert(tmp_path, module, "vit", ("--quantize", "float16"))
    x = np.random.RandomState(7).uniform(0, 1, (2, *IMAGE)).astype(np.float32)
    expected = np.asarray(module.apply(variables, jnp.asarray(x)))
    assert np.max(np.abs(tfjs.predict(out, [x]).outputs[0] - expected)) < 0.05
