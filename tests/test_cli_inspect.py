"""`python -m writer inspect`: real checkpoints of every format, text and JSON (against its schema)."""
from __future__ import annotations

import json
import subprocess
import sys

import flax
import jax
import jsonschema
import numpy as np
import pytest

from tests import flax_models as fm
from tests.conftest import ROOT
from writer.cli import main

SCHEMA = json.loads((ROOT / "schemas" / "inspect.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
CNN = fm.CNN()
SHAPE = (28, 28, 1)
TEMPLATE_CLASSES = ["Conv2D", "AveragePooling2D", "Conv2D", "AveragePooling2D", "Flatten", "Dense", "Dense"]


@pytest.fixture(scope="module")
def variables():
    return fm.init(CNN, SHAPE)


def _inspect_json(capsys, *args) -> dict:
    assert main(["inspect", *map(str, args), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    VALIDATOR.validate(document)
    return document


def _leaves(tree: dict) -> dict:
    return {path: np.asarray(leaf) for path, leaf in
            flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(tree), sep="/").items()
            if hasattr(leaf, "shape") and np.ndim(leaf) > 0}


def _find(node: dict, path: str) -> dict:
    if node["path"] == path:
        return node
    for child in node.get("children", []):
        if path == child["path"] or path.startswith(child["path"] + "/"):
            return _find(child, path)
    raise KeyError(path)


FORMATS = {
    # name: (saver, expected format, converted collection stored at, ignored top-level names)
    "msgpack-variables": (lambda v, d: fm.save_msgpack({"params": v["params"]}, d / "v.msgpack"), "flax-msgpack", "params", []),
    "msgpack-bare-params": (lambda v, d: fm.save_msgpack(v["params"], d / "p.msgpack"), "flax-msgpack", "(root)", []),
    "msgpack-trainstate": (lambda v, d: fm.save_msgpack(fm.train_state_of(CNN, v), d / "s.msgpack"), "flax-msgpack",
                           "params", ["opt_state"]),
    "orbax-standard": (lambda v, d: fm.save_orbax({"params": v["params"]}, d / "orbax"), "orbax", "params", []),
    "orbax-trainstate": (lambda v, d: fm.save_orbax(fm.train_state_of(CNN, v), d / "orbax_state"), "orbax", "params",
                         ["opt_state"]),
    "orbax-manager": (lambda v, d: fm.save_orbax_manager({1: {"params": v["params"]}, 5: {"params": v["params"]}},
                                                         d / "manager"), "orbax", "params", []),
    "legacy-msgpack": (lambda v, d: fm.save_legacy({"params": v["params"]}, d / "legacy", (3,), False), "flax-msgpack",
                       "params", []),
    "npz": (lambda v, d: fm.save_npz({"params": v["params"]}, d / "p.npz"), "npz", "params", []),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_inspect_every_format(tmp_path, capsys, variables, fmt):
    saver, expected_format, stored_at, ignored = FORMATS[fmt]
    checkpoint = saver(variables, tmp_path)
    doc = _inspect_json(capsys, checkpoint)
    assert doc["format"] == expected_format
    params = _leaves(variables["params"])
    # Converted collection: every parameter, totals computed here from the arrays themselves.
    converted = [c for c in doc["collections"] if c["status"] == "converted"]
    assert [(c["name"], c["stored_at"]) for c in converted] == [("params", stored_at)]
    assert converted[0]["tensors"] == len(params)
    assert converted[0]["params"] == sum(a.size for a in params.values())
    assert converted[0]["bytes"] == sum(a.nbytes for a in params.values())
    assert sorted(c["name"] for c in doc["collections"] if c["status"] == "ignored") == ignored
    for c in doc["collections"]:
        if c["status"] == "ignored":
            assert c["reason"] == "training state" and c["tensors"] > 0
    # Per-tensor rows and per-subtree sums.
    prefix = "" if stored_at == "(root)" else "params/"
    for path, array in params.items():
        node = _find(doc["tree"], prefix + path)
        assert (node["kind"], node["shape"], node["dtype"]) == ("tensor", list(array.shape), str(array.dtype))
        assert (node["params"], node["bytes"], node["status"]) == (array.size, array.nbytes, "converted")
    dense = _find(doc["tree"], prefix + "Dense_0")
    assert dense["params"] == params["Dense_0/kernel"].size + params["Dense_0/bias"].size
    assert dense["tensors"] == 2
    assert doc["totals"]["tensors"] == len(params) + sum(c["tensors"] for c in doc["collections"] if c["status"] == "ignored")
    # The graph a conversion would write.
    assert [layer["class_name"] for layer in doc["graph"]["layers"]] == TEMPLATE_CLASSES
    assert doc["graph"]["param_count"] == converted[0]["params"]
    assert doc["graph"]["inputs"] == [{"name": "input", "shape": list(SHAPE), "dtype": "float32"}]
    assert doc["graph_error"] is None
    assert {"INPUT_SHAPE", "POOLING", "ACTIVATION"} <= {n["code"] for n in doc["notices"] if n["kind"] == "assumption"}


def test_inspect_orbax_manager_picks_newest_step_or_given(tmp_path, capsys, variables):
    root = fm.save_orbax_manager({1: {"params": variables["params"]}, 5: {"params": variables["params"]}}, tmp_path / "m")
    assert _inspect_json(capsys, root)["step"] == 5
    assert _inspect_json(capsys, root, "--step", "1")["step"] == 1


def test_inspect_text_is_an_aligned_tree_without_colours_when_piped(tmp_path, variables):
    state = fm.train_state_of(CNN, variables)
    checkpoint = fm.save_msgpack(state, tmp_path / "state.msgpack")
    result = subprocess.run([sys.executable, "-m", "writer", "inspect", str(checkpoint)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "\x1b[" not in text  # a pipe is not a terminal
    lines = text.splitlines()
    kernel = np.asarray(variables["params"]["Dense_0"]["kernel"])
    row = next(line for line in lines if line.strip().startswith("kernel") and str(kernel.shape) in line)
    assert row.startswith("      kernel")  # params > Dense_0 > kernel: three levels of indentation
    assert f"{kernel.size:,}" in row and "float32" in row
    opt = next(line for line in lines if line.strip().startswith("opt_state  ("))
    opt_tensors = len(jax.tree_util.tree_leaves(state.opt_state))
    assert f"({opt_tensors} tensors, ignored)" in opt
    assert "ignored: training state" in text
    assert "layer graph that would be written: Sequential, inferred from the parameter tree" in text
    assert "assumption[POOLING]" in text
    header = next(line for line in lines if line.strip().startswith("path"))
    # Columns line up: the params column of the header ends where the numbers end.
    assert header.index("params") + len("params") == row.index(f"{kernel.size:,}") + len(f"{kernel.size:,}")


def test_inspect_all_and_depth(tmp_path, capsys, variables):
    state = fm.train_state_of(CNN, variables)
    checkpoint = fm.save_msgpack(state, tmp_path / "state.msgpack")
    assert main(["inspect", str(checkpoint), "--all"]) == 0
    expanded = capsys.readouterr().out
    assert "mu" in expanded and "nu" in expanded  # Adam moments listed
    assert main(["inspect", str(checkpoint), "--depth", "1"]) == 0
    folded = capsys.readouterr().out
    assert "params  (8 tensors, folded)" in folded and "Dense_0" not in folded.split("layer graph")[0]


def test_inspect_with_module_shows_the_traced_graph(tmp_path, capsys, variables):
    checkpoint = fm.save_msgpack({"params": variables["params"]}, tmp_path / "v.msgpack")
    doc = _inspect_json(capsys, checkpoint, "--module", "tests/flax_models.py:CNN", "--input-shape", "28,28,1")
    graph = doc["graph"]
    assert graph["topology"] == "traced"
    classes = [layer["class_name"] for layer in graph["layers"]]
    assert classes.count("Conv2D") == 2 and classes.count("Dense") == 2 and "Flatten" in classes
    dense = next(layer for layer in graph["layers"] if layer["name"] == "Dense_0")
    assert dense["weights"][0] == {"name": "kernel", "shape": list(variables["params"]["Dense_0"]["kernel"].shape),
                                   "from": "params/Dense_0/kernel"}


def test_inspect_reports_a_graph_that_cannot_be_inferred(tmp_path, capsys):
    import flax.linen as nn

    class WithNorm(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(3)(nn.BatchNorm(use_running_average=not train)(x))

    variables = fm.init(WithNorm(), (4,))
    checkpoint = fm.save_msgpack(variables, tmp_path / "bn.msgpack")
    doc = _inspect_json(capsys, checkpoint)
    assert doc["graph"] is None
    assert doc["graph_error"]["code"] == "TOPOLOGY_NOT_INFERRED" and "--module" in doc["graph_error"]["hint"]
    assert {c["name"] for c in doc["collections"] if c["status"] == "converted"} == {"params", "batch_stats"}
    assert main(["inspect", str(checkpoint)]) == 0  # the tree is still shown
    text = capsys.readouterr().out
    assert "layer graph: cannot be built" in text and "error[TOPOLOGY_NOT_INFERRED]" in text
    assert "batch_stats" in text and "BatchNorm_0" in text


def test_inspect_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.msgpack")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error[CHECKPOINT_NOT_FOUND]") and "hint:" in err
    assert main(["inspect", "examples/mnist_ckpt", "--depth", "0"]) == 2
    assert capsys.readouterr().err.startswith("error[BAD_OPTION]")


def test_inspect_schema_rejects_a_wrong_document(capsys):
    doc = _inspect_json(capsys, ROOT / "examples" / "mnist_ckpt")
    leaf = _find(doc["tree"], "params/Dense_1/bias")
    del leaf["shape"]
    assert list(VALIDATOR.iter_errors(doc))  # each check in the schema can fail


def test_docs_show_the_real_inspect_output(capsys, monkeypatch):
    """docs/cli.md quotes `inspect examples/mnist_ckpt` verbatim; it is deterministic, so it must match."""
    text = (ROOT / "docs" / "cli.md").read_text()
    command = "$ python -m writer inspect examples/mnist_ckpt\n"
    quoted = text[text.index(command) + len(command):].split("\n```", 1)[0]
    monkeypatch.chdir(ROOT)
    assert main(["inspect", "examples/mnist_ckpt"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == quoted
