"""Results computed and thrown away are left out, and nothing exits 0 with a model TF.js cannot load.

GPT-Neo calls its final LayerNorm twice on the same input and keeps the second
result: the first call's weights used to be written with no target variable,
and TF.js refused the model.json ("Provided weight data has no target variable").
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.jax_reference import compare_batches, prepare, random_inputs
from topology.layers.base import Case
from topology.vocabulary.errors import ConversionError
from writer import to_tensorflowjs
from writer.weight_targets import check_weight_targets


def _linen_neo():
    import flax.linen as nn

    class Neo(nn.Module):  # transformers' FlaxGPTNeoModule: ln_f applied, result dropped, applied again
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4)(x)
            ln_f = nn.LayerNorm(name="ln_f")
            _ = ln_f(h)
            unused_branch = nn.Dense(7, name="probe")(h)  # a whole layer whose result is never used
            del unused_branch
            return nn.Dense(2)(ln_f(h))

    return Neo()


def _nnx_neo():
    from flax import nnx

    class Neo(nnx.Module):
        def __init__(self):
            self.dense = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
            self.ln_f = nnx.LayerNorm(4, rngs=nnx.Rngs(1))
            self.head = nnx.Linear(4, 2, rngs=nnx.Rngs(2))

        def __call__(self, x):
            h = self.dense(x)
            self.ln_f(h)
            return self.head(self.ln_f(h))

    return Neo()


@pytest.mark.parametrize("build", [_linen_neo, _nnx_neo], ids=["linen", "nnx"])
def test_result_thrown_away_is_pruned_and_loads_in_tfjs(tmp_path, tfjs, build):
    case = Case("double-call", build, (3,))
    module, variables, run_jax = prepare(case)
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=(3,))
    compare_batches(tfjs, tmp_path / "out", run_jax, lambda batch: random_inputs([(3,)], batch, batch))
    document = json.loads((tmp_path / "out" / "model.json").read_text())
    names = [w["name"] for group in document["weightsManifest"] for w in group["weights"]]
    # the LayerNorm ends in a layer of the module's name (a BatchNormalization in the tile-free form)
    ln_f = next(layer.name for layer in report.layers
                if layer.class_name in ("LayerNormalization", "BatchNormalization"))
    assert [n for n in names if n.startswith(ln_f + "/")][:2] == [f"{ln_f}/gamma", f"{ln_f}/beta"]
    assert not any(n.startswith(ln_f + "_2") for n in names)
    assert not ln_f.endswith("_2"), "the kept call takes back the module's own name"
    assert not any(n.startswith("probe") for n in names)
    unused = [n for n in report.notices if n.code == "UNUSED_RESULT"]
    assert len(unused) == 1 and "ln_f" in unused[0].message


def test_a_model_tfjs_would_refuse_is_never_written(tmp_path, monkeypatch):
    """The structural check catches a converter bug (here: pruning switched off) before exit 0."""
    import topology.trace.build

    monkeypatch.setattr(topology.trace.build, "prune_unused", lambda graph: graph)
    module, variables, _ = prepare(Case("double-call", _linen_neo, (3,)))
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=(3,))
    assert err.value.code == "WEIGHT_TARGET_MISMATCH" and "ln_f" in err.value.message
    assert not (tmp_path / "out").exists()


def _document(layers: list[dict], outputs: list[str], weights: list[str]) -> dict:
    config = {"layers": layers, "output_layers": [[name, 0, 0] for name in outputs]}
    return {"modelTopology": {"model_config": {"class_name": "Functional", "config": config}},
            "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": [{"name": w} for w in weights]}]}


def _layer(class_name: str, name: str, inbound: list[str], **config) -> dict:
    return {"class_name": class_name, "name": name, "config": config,
            "inbound_nodes": [[[i, 0, 0, {}] for i in inbound]] if inbound else []}


@pytest.mark.parametrize("weights, problem", [
    (["d/kernel", "d/bias"], None),
    (["d/kernel"], "needs weight(s) bias"),
    (["d/kernel", "d/bias", "d/bias"], "2 times"),
    (["d/kernel", "d/bias", "n/gamma"], "no layer n"),
    (["d/kernel", "d/bias", "r/gamma"], "no variable for the manifest weight(s) gamma"),
    (["d/kernel", "d/bias", "dead/kernel"], "no output depends on layer dead"),
])
def test_weight_targets_match_what_tfjs_checks(weights, problem):
    layers = [_layer("InputLayer", "x", []), _layer("Dense", "d", ["x"], use_bias=True),
              _layer("Rescaling", "r", ["d"]), _layer("Dense", "dead", ["x"], use_bias=False)]
    document = _document(layers, ["r"], weights)
    if problem is None:
        check_weight_targets(document)
        return
    with pytest.raises(ConversionError) as err:
        check_weight_targets(document)
    assert err.value.code == "WEIGHT_TARGET_MISMATCH" and problem in err.value.message, err.value.message
    assert np.char.count(err.value.message, "TF.js") == 1


def test_transformers_gpt_neo_converts_and_loads(tmp_path, tfjs):
    """The model the problem was found in: transformers' FlaxGPTNeoForCausalLM (tiny config, tied head)."""
    transformers = pytest.importorskip("transformers")
    import flax.linen as nn
    import jax.numpy as jnp

    config = transformers.GPTNeoConfig(vocab_size=40, hidden_size=8, num_layers=2, num_heads=2,
                                       attention_types=[[["global", "local"], 1]], max_position_embeddings=16,
                                       window_size=4)
    neo = transformers.FlaxGPTNeoForCausalLM(config, seed=0)

    class Wrap(nn.Module):
        inner: nn.Module

        @nn.compact
        def __call__(self, ids):
            positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
            return self.inner(ids, jnp.ones_like(ids), positions, deterministic=True)[0]

    module, variables = Wrap(neo.module), {"params": {"inner": neo.params}}
    report = to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=(6,), input_dtype="int32")
    assert any(n.code == "UNUSED_RESULT" and "ln_f" in n.message for n in report.notices)
    compare_batches(tfjs, tmp_path / "out", lambda xs: np.asarray(module.apply(variables, jnp.asarray(xs[0]))),
                    lambda batch: random_inputs([(6,)], batch, batch, "int32", 0, 40))
