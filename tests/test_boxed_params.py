"""Boxed parameters (nn.with_logical_partitioning, nn.Partitioned, nnx.with_partitioning) convert.

Linen boxes arrive as <variable>/value leaves in a checkpoint (fixed[BOXED_VALUE_LEAVES]) and as
LogicallyPartitioned objects from module.init (the expected tree is unboxed); NNX keeps the
sharding as variable metadata. Checked in real TF.js against JAX.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.jax_reference import compare_batches, random_inputs
from tests.flax_models import save_msgpack, save_orbax
from writer import to_tensorflowjs
from topology.vocabulary.errors import Notices
from writer.fixes.keys import normalise_paths
from topology.vocabulary.tensors import TensorRef


def _ref(*path):
    return TensorRef(path, (2,), np.dtype("float32"), None)


def test_only_boxed_value_leaves_are_unwrapped():
    tree = {p: _ref(*p) for p in [("Dense_0", "kernel", "value"), ("Dense_0", "bias"), ("attn", "value", "kernel")]}
    notices = Notices()
    fixed = normalise_paths(tree, "ckpt", notices, True)
    assert sorted(fixed) == [("Dense_0", "bias"), ("Dense_0", "kernel"), ("attn", "value", "kernel")]
    assert [n.code for n in notices.items] == ["BOXED_VALUE_LEAVES"]


def test_boxed_value_leaves_are_an_error_without_fixes():
    from topology.vocabulary.errors import ConversionError

    with pytest.raises(ConversionError) as error:
        normalise_paths({("Dense_0", "kernel", "value"): _ref("Dense_0", "kernel", "value"),
                         ("Dense_0", "bias"): _ref("Dense_0", "bias")}, "ckpt", Notices(), False)
    assert error.value.code == "FIX_DISABLED" and "boxed" in str(error.value)


@pytest.mark.parametrize("save", [save_msgpack, save_orbax])
def test_linen_partitioned_params_from_a_checkpoint(tmp_path, tfjs, save):
    import flax.linen as nn

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            part = nn.with_logical_partitioning
            x = nn.Dense(6, kernel_init=part(nn.initializers.lecun_normal(), ("embed", "mlp")),
                         bias_init=part(nn.initializers.normal(0.1), ("mlp",)))(x)
            x = nn.LayerNorm(scale_init=part(nn.initializers.ones, ("mlp",)))(nn.relu(x))
            return nn.Dense(3, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model")))(x)

    model = Model()
    variables = model.init(jax.random.PRNGKey(0), jnp.ones((1, 4)))
    path = save(variables, tmp_path / ("m.msgpack" if save is save_msgpack else "ckpt"))
    report = to_tensorflowjs(path, tmp_path / "out", module=model, input_shape=(4,))
    assert "BOXED_VALUE_LEAVES" in [n.code for n in report.notices]
    compare_batches(tfjs, tmp_path / "out", lambda xs: np.asarray(model.apply(variables, jnp.asarray(xs[0]))),
                    lambda batch: random_inputs([(4,)], batch, seed=batch, low=-1, high=1))


def test_nnx_partitioned_params(tmp_path, tfjs):
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
            self.a = nnx.Linear(4, 6, kernel_init=init, rngs=rngs)
            self.b = nnx.Linear(6, 3, rngs=rngs)

        def __call__(self, x):
            return self.b(nnx.gelu(self.a(x)))

    # Flax creates sharded variables eagerly: under a (one-device) mesh, as a real user would.
    with jax.sharding.set_mesh(jax.make_mesh((1, 1), ("embed", "mlp"))):
        model, fresh = Model(nnx.Rngs(0)), Model(nnx.Rngs(1))
    assert model.a.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")
    path = save_orbax(nnx.state(model), tmp_path / "ckpt")
    to_tensorflowjs(path, tmp_path / "out", module=fresh, input_shape=(4,))  # weights from the file
    compare_batches(tfjs, tmp_path / "out", lambda xs: np.asarray(model(jnp.asarray(xs[0]))),
                    lambda batch: random_inputs([(4,)], batch, seed=batch, low=-1, high=1))
