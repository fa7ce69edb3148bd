"""LayerNorm without tfjs' tiling LayerNormalization layer: exact on the rows that stress its epsilon.

The layer matrix (tests/test_layer_matrix.py) runs random inputs; here rows are constant or nearly
so, where the normalisation is decided by epsilon and tfjs' l2Normalize floor (1e-7) would show;
the reference is the float64 formula (JAX's float32 fast variance cancels on one of the rows).
"""
from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tests.conftest import assert_close
from writer import to_tensorflowjs


def test_constant_and_near_constant_rows_match_jax(tmp_path, tfjs):
    width = 8
    rows = np.random.RandomState(0).normal(0, 1, (1, 6, width)).astype(np.float32)
    rows[0, 0] = 3.0  # constant: every value becomes beta
    rows[0, 1] = 1.0 + np.linspace(0, 1e-5, width)  # variance 1e-11: decided by epsilon and the floor
    rows[0, 2] = np.linspace(-1e-4, 1e-4, width)
    rows[0, 3] *= 1e4  # large values
    for epsilon in (1e-12, 1e-6, 1e-3):
        module = nn.LayerNorm(epsilon=epsilon)
        variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 6, width)))
        variables = jax.tree_util.tree_map(lambda v: v + np.random.RandomState(1).normal(0, 0.5, v.shape), variables)
        out = tmp_path / f"eps{epsilon}"
        to_tensorflowjs(module, out, variables=variables, input_shape=(6, width))
        classes = [layer["class_name"] for layer in
                   json.loads((out / "model.json").read_text())["modelTopology"]["model_config"]
                   ["config"]["layers"]]
        assert "LayerNormalization" not in classes and "Dot" in classes  # the tile-free form was used
        got = tfjs.predict(out, [rows]).outputs[0]
        x = rows.astype(np.float64)
        centred = x - x.mean(-1, keepdims=True)
        params = variables["params"]
        exact = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + epsilon) * params["scale"] + params["bias"]
        assert_close(got, exact, rtol=2e-5)
        # JAX's own float32 variance, mean(x^2) - mean(x)^2, cancels on row 1 (1 + 1e-5 steps): compare the rest.
        others = [0, 2, 3, 4, 5]
        assert_close(got[:, others], np.asarray(module.apply(variables, rows))[:, others], rtol=2e-5)
