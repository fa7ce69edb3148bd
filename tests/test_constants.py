"""Constants and parameters outside layers (topology/ops/constants.py): what is refused and why,
lazy reading of parameters, and byte-identical output. The conversions themselves are checked
against JAX in TF.js by the layer matrix (``constants:*`` cases)."""
from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from writer import ConversionError, to_tensorflowjs


class MaxPoolPadded(nn.Module):  # explicit padding on a conv output, which may be negative
    @nn.compact
    def __call__(self, x):
        return nn.max_pool(nn.Conv(2, (3, 3))(x), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ParamOverActivations(nn.Module):
    @nn.compact
    def __call__(self, x):
        return self.param("numerator", nn.initializers.ones, (4,)) / nn.Dense(4)(x)


class LearnedPosition(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x) + self.param("pos", nn.initializers.normal(1.0), (1, x.shape[1], 3))


def _convert(module, shape, out):
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)))
    return to_tensorflowjs(module, out, variables=variables, input_shape=shape)


@pytest.mark.parametrize("module, shape, fragment", [
    (MaxPoolPadded(), (8, 8, 2), "values that may be negative"),
    (ParamOverActivations(), (3,), "dividing a constant array by activations"),
])
def test_refusals_name_the_construct(tmp_path, module, shape, fragment):
    with pytest.raises(ConversionError) as err:
        _convert(module, shape, tmp_path / "out")
    assert err.value.code == "UNSUPPORTED_OPERATION" and fragment in err.value.message and err.value.hint
    assert not (tmp_path / "out").exists()


def test_output_is_byte_identical(tmp_path):
    for name in ("a", "b"):
        _convert(LearnedPosition(), (5, 2), tmp_path / name)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_parameter_constant_is_read_when_written(tmp_path):
    """The learned table is bound lazily (a TensorRef), and its values land in the constant's bias."""
    module = LearnedPosition()
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 2)))
    report = _convert(module, (5, 2), tmp_path / "out")
    constant = next(layer for layer in report.layers if layer.class_name == "Dense" and layer.name.startswith("constant"))
    assert constant.params == 5 * 3 * 2  # zero kernel (1, 15) and the table as bias (15,)
    manifest = json.loads((tmp_path / "out" / "model.json").read_text())["weightsManifest"]
    data = b"".join((tmp_path / "out" / path).read_bytes() for group in manifest for path in group["paths"])
    offset = 0
    for entry in (w for group in manifest for w in group["weights"]):
        size = int(np.prod(entry["shape"])) * 4
        if entry["name"] == f"{constant.name}/bias":
            bias = np.frombuffer(data[offset:offset + size], "<f4")
        offset += size
    np.testing.assert_array_equal(bias, np.asarray(variables["params"]["pos"], np.float32).ravel())
