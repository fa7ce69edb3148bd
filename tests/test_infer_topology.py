"""The parameter-tree template: what it infers, and the clear errors when a tree does not fit."""
from __future__ import annotations

import numpy as np
import pytest

from tests import flax_models as fm
from tests.conftest import assert_close, predict_tfjs
from topology.infer import TemplateOptions, infer_graph
from writer import ConversionError, to_tensorflowjs
from topology.vocabulary.errors import Notices
from topology.vocabulary.tensors import TensorRef
from topology.vocabulary.variables import Variables


def _variables(shapes: dict[str, tuple[int, ...]], batch_stats: bool = False) -> Variables:
    params = {}
    for path, shape in shapes.items():
        key = tuple(path.split("/"))
        params[key] = TensorRef(key, shape, np.dtype("float32"), lambda s=shape: np.zeros(s, "float32"))
    collections = {"params": params}
    if batch_stats:
        collections["batch_stats"] = {("BatchNorm_0", "mean"): params[next(iter(params))]}
    return Variables(collections)


def _infer(shapes, **options):
    notices = Notices()
    graph = infer_graph(_variables(shapes), TemplateOptions(**options), notices)
    return graph, notices


def test_auto_names_sort_numerically_convs_first():
    shapes = {"Dense_10/kernel": (8, 2), "Dense_2/kernel": (16, 8), "Conv_0/kernel": (3, 3, 1, 4),
              "Conv_1/kernel": (3, 3, 4, 4)}
    graph, _ = _infer(shapes)
    assert [l.name for l in graph.layers if l.class_name in ("Conv2D", "Dense")] == ["Conv_0", "Conv_1", "Dense_2", "Dense_10"]
    assert graph.inputs[0].shape == (8, 8, 1)  # 16 = 2*2*4 after two 2x2 pools
    assert [l.config["use_bias"] for l in graph.layers if "use_bias" in l.config] == [False] * 4


def test_solved_input_for_conv1d_and_conv3d():
    graph, _ = _infer({"Conv_0/kernel": (5, 2, 4), "Dense_0/kernel": (4 * 7, 3)})
    assert graph.inputs[0].shape == (14, 2) and graph.layers[0].class_name == "Conv1D"
    graph, _ = _infer({"Conv_0/kernel": (3, 3, 3, 1, 2), "Dense_0/kernel": (2 * 8, 3)}, pool="none")
    assert graph.inputs[0].shape == (2, 2, 2, 1) and graph.layers[0].class_name == "Conv3D"


def test_custom_names_use_checkpoint_order_and_say_so():
    graph, notices = _infer({"encoder/kernel": (10, 6), "head/kernel": (6, 2)})
    assert [l.name for l in graph.layers] == ["encoder", "head"]
    assert any(n.code == "LAYER_ORDER" for n in notices.items)


@pytest.mark.parametrize("shapes, code, fragment", [
    ({"Block_0/Dense_0/kernel": (4, 4)}, "TOPOLOGY_NOT_INFERRED", "params/Block_0/Dense_0/kernel"),
    ({"BatchNorm_0/scale": (4,), "Dense_0/kernel": (4, 2)}, "TOPOLOGY_NOT_INFERRED", "params/BatchNorm_0"),
    ({"Dense_0/kernel": (4, 5), "Dense_1/kernel": (6, 2)}, "SHAPE_MISMATCH", "params/Dense_1/kernel"),
    ({"Conv_0/kernel": (3, 3, 1, 4), "Dense_0/kernel": (4 * 12, 2)}, "INPUT_SHAPE_REQUIRED", "params/Dense_0"),
    ({"Conv_0/kernel": (3, 3, 1, 4)}, "INPUT_SHAPE_REQUIRED", "convolutions only"),
    ({"Dense_0/kernel": (3, 3, 1, 4)}, "TOPOLOGY_NOT_INFERRED", "not a Dense kernel"),
    ({"Dense_0/kernel": (4, 2), "Dense_0/bias": (3,)}, "SHAPE_MISMATCH", "params/Dense_0/bias"),
    ({"head/kernel": (6, 2), "Conv_0/kernel": (3, 3, 1, 6)}, "TOPOLOGY_NOT_INFERRED", "after a Dense"),
])
def test_trees_outside_the_template_are_clear_errors(shapes, code, fragment):
    with pytest.raises(ConversionError) as err:
        _infer(shapes)
    assert err.value.code == code and fragment in err.value.message and err.value.hint


def _vgg_like() -> dict[str, tuple[int, ...]]:
    """VGG-16's parameter shapes under the template's names: 13 convolutions, then 25088 = 512*7*7 features."""
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    shapes, previous = {}, 3
    for i, width in enumerate(widths):
        shapes[f"Conv_{i}/kernel"], previous = (3, 3, previous, width), width
    shapes.update({"Dense_0/kernel": (512 * 7 * 7, 64), "Dense_1/kernel": (64, 10)})
    return shapes


def test_deep_conv_stack_demands_input_shape_instead_of_absurd_input():
    """Issue 14 point 9: the template would solve VGG-16 to a 57344x57344x3 input; it must refuse."""
    with pytest.raises(ConversionError) as err:
        _infer(_vgg_like())
    assert err.value.code == "INPUT_SHAPE_REQUIRED" and "57344,57344,3" in err.value.message
    assert "--input-shape" in err.value.hint
    graph, _ = _infer({"Conv_0/kernel": (3, 3, 1, 4), "Conv_1/kernel": (3, 3, 4, 4), "Dense_0/kernel": (4 * 49, 2)})
    assert graph.inputs[0].shape == (28, 28, 1)  # the MNIST-sized solution is still given


def test_deep_conv_checkpoint_cli_refuses_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    from flax.serialization import to_bytes

    from tests.conftest import ROOT

    params = {}
    for path, shape in _vgg_like().items():
        layer, name = path.split("/")
        params.setdefault(layer, {})[name] = np.zeros(shape, np.float32)
    ckpt = tmp_path / "vgg.msgpack"
    ckpt.write_bytes(to_bytes({"params": params}))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "writer", str(ckpt), str(out)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "error[INPUT_SHAPE_REQUIRED]" in run.stderr and "Traceback" not in run.stderr
    assert not out.exists()


def test_batch_stats_need_the_module():
    with pytest.raises(ConversionError) as err:
        infer_graph(_variables({"Dense_0/kernel": (4, 2)}, batch_stats=True), TemplateOptions(), Notices())
    assert err.value.code == "TOPOLOGY_NOT_INFERRED" and "--module" in err.value.hint


def test_given_input_shape_is_checked():
    with pytest.raises(ConversionError) as err:
        _infer({"Conv_0/kernel": (3, 3, 3, 4), "Dense_0/kernel": (4 * 49, 2)}, input_shape=(28, 28, 1))
    assert err.value.code == "INPUT_SHAPE_MISMATCH" and "3 channels" in err.value.message


@pytest.mark.parametrize("activation, flax_fn", [("tanh", "tanh"), ("silu", "silu"), ("elu", "elu")])
def test_activation_option_matches_jax(tmp_path, tfjs, activation, flax_fn):
    import flax.linen as nn
    import jax

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = getattr(jax.nn, flax_fn)(nn.Dense(16)(x))
            return nn.Dense(3)(x)

    variables = fm.init(MLP(), (6,))
    checkpoint = fm.save_msgpack(variables, tmp_path / "m.msgpack")
    to_tensorflowjs(checkpoint, tmp_path / "out", activation=activation)
    x = fm.inputs((6,))
    assert_close(predict_tfjs(tfjs, tmp_path / "out", x), fm.run(MLP(), variables, x))
