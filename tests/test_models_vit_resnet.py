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
from tests.conftest import ROOT
from tests.jax_reference import compare_batches, random_inputs, redraw, spread

IMAGE = (32, 32, 3)


def _convert(tmp_path, module, name: str, extra: tuple[str, ...] = ()):
    variables = redraw(jax.tree_util.tree_map(np.asarray, module.init(jax.random.PRNGKey(0), jnp.zeros((1, *IMAGE)))),
                       spread(0.3), seed=0)
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
    compare_batches(tfjs, out, lambda xs: np.asarray(module.apply(variables, jnp.asarray(xs[0]))),
                    lambda batch: random_inputs([IMAGE], batch, seed=batch, low=0, high=1))
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
        before = layers[pool - 2]  # a ReLU layer, or a layer with the relu fused in (--optimize)
        assert classes[pool - 1] == "ZeroPadding2D"
        assert before["class_name"] == "ReLU" or before["config"].get("activation") == "relu"


def test_quantized_vit_stays_close(tmp_path, tfjs):
    module = ViT()
    variables, out, _ = _convert(tmp_path, module, "vit", ("--quantize", "float16"))
    x = random_inputs([IMAGE], 2, seed=7, low=0, high=1)[0]
    expected = np.asarray(module.apply(variables, jnp.asarray(x)))
    assert np.max(np.abs(tfjs.predict(out, [x]).outputs[0] - expected)) < 0.05
