"""What the general lowering mechanisms refuse: a specific code naming the operation and the user's line.

(What they convert is in the layer matrix: ``topology/ops/{expression,norms,structural}.py``,
the computed-parameter cases of ``layers/dense.py`` and ``layers/conv.py``, and the merged-batch
cases of ``ops/shape_ops.py``.) No TF.js needed: these stop before anything is written.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from topology.vocabulary.errors import ConversionError
from writer import to_tensorflowjs


class After(nn.Module):
    fn: object

    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(self.fn(nn.Dense(4)(x)))


class ComputedFromInput(nn.Module):  # a "weight" computed from the activations: not a layer parameter
    def setup(self):
        self.head = nn.Dense(3, use_bias=False)

    def __call__(self, x):
        return self.head.apply({"params": {"kernel": jnp.ones((4, 3)) * x.sum()}}, x)


REFUSED = [
    ("exp", lambda x: jnp.exp(x) * x, (4,), "element-wise operation `exp` on activations"),
    ("sqrt-outside-norm", lambda x: jnp.sqrt(jnp.abs(x)) + x, (4,), "`sqrt`"),
    ("divide-by-activations", lambda x: x / (1.0 + x * x), (4,), "`div` on two activations"),
    ("cumsum-of-ints", lambda x: jnp.cumsum((x > 0).astype(jnp.int32), axis=1).astype(jnp.float32), (3, 4), None),
    ("merged-batch-reshaped-again", lambda x: x.reshape(-1, 4).reshape(-1, 2, 2), (3, 4),
     "batch axis merges axes (3,)"),
    ("pad-interior", lambda x: jax.lax.pad(x, 0.0, ((0, 0, 0), (0, 0, 1))), (4,), "interior padding"),
]


@pytest.mark.parametrize("name, fn, shape, says", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_with_the_operation_and_line(tmp_path, name, fn, shape, says):
    module = After(fn)
    variables = module.init(jax.random.PRNGKey(0), jnp.ones((1, *shape)))
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=shape)
    assert err.value.code == "UNSUPPORTED_OPERATION", err.value.render()
    if says is not None:
        assert says in err.value.message, err.value.message
    assert "test_lowering_refusals.py:" in err.value.message
    assert not (tmp_path / "out").exists()


def test_parameter_computed_from_activations_is_refused(tmp_path):
    module = ComputedFromInput()
    variables = {"params": {}}
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(module, tmp_path / "out", variables=variables, input_shape=(4,))
    assert err.value.code == "UNSUPPORTED_OPERATION" and "kernel of layer head computed from the inputs" in \
        err.value.message, err.value.render()
