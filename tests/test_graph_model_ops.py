"""Every GraphModel primitive family's own cases (``CASES`` of ``topology/graphdef/ops/*.py``),
written as GraphModels and run in real TF.js against JAX, with batch 1 and batch 3 (the graph's
batch axis is dynamic)."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from topology.graph import InputSpec
from topology.graphdef.ops import families, supported_primitives
from writer.convert import convert_function

CASES = [(f"{family}:{case.name}", case) for family, module in families().items() for case in module.CASES]


def _inputs(case, batch: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for shape, dtype in case.inputs:
        if dtype == "int32":
            arrays.append(rng.integers(*case.int_range, size=(batch, *shape)).astype("int32"))
        else:
            arrays.append(rng.standard_normal((batch, *shape)).astype("float32"))
    return arrays


@pytest.mark.parametrize("case_id, case", CASES, ids=[c[0] for c in CASES])
def test_case_matches_jax_in_tfjs(tmp_path, tfjs, case_id, case):
    specs = [InputSpec(f"input_{i + 1}", shape, dtype) for i, (shape, dtype) in enumerate(case.inputs)]
    convert_function(case.fn, tmp_path / "out", specs)
    for batch in (1, 3):
        xs = _inputs(case, batch, seed=batch)
        want = [np.asarray(o) for o in jax.tree_util.tree_leaves(case.fn(*xs))]
        got = tfjs.predict(tmp_path / "out", xs).outputs
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape, case_id
            np.testing.assert_allclose(g.astype("float64"), w.astype("float64"), atol=case.tolerance, rtol=1e-5,
                                       err_msg=case_id)


WASM_CASES = [(cid, case) for cid, case in CASES if cid in ("shape:take_along_axis", "shape:take_along_middle_axis",
                                                            "linalg:attention_per_head", "linalg:attention_masked",
                                                            "linalg:attention_block_diagonal",
                                                            "shape:embedding_take_out_of_range",
                                                            "linalg:mlp_gelu")]


@pytest.mark.parametrize("case_id, case", WASM_CASES, ids=[c[0] for c in WASM_CASES])
def test_wasm_sensitive_cases_run_in_wasm(tmp_path, tfjs, case_id, case):
    # take_along_axis must avoid GatherV2's batch_dims, on which TF.js 4.22's wasm backend traps;
    # attention's per-head products (Unpack, batch-1 BatchMatMulV2, Pack) take the wasm fast path.
    specs = [InputSpec(f"input_{i + 1}", shape, dtype) for i, (shape, dtype) in enumerate(case.inputs)]
    convert_function(case.fn, tmp_path / "out", specs)
    xs = _inputs(case, 3, seed=7)
    got = tfjs.predict(tmp_path / "out", xs, backend="wasm").outputs[0]
    np.testing.assert_allclose(got, np.asarray(case.fn(*xs)), atol=case.tolerance, err_msg=case_id)


def test_attention_runs_one_plain_product_per_head_and_a_native_softmax(tmp_path):
    # TF.js 4.22's wasm backend runs only batch-1 products without adjoint flags on XNNPACK
    case = dict(CASES)["linalg:attention_per_head"]
    specs = [InputSpec(f"input_{i + 1}", shape, dtype) for i, (shape, dtype) in enumerate(case.inputs)]
    convert_function(case.fn, tmp_path / "out", specs)
    nodes = json.loads((tmp_path / "out" / "model.json").read_text())["modelTopology"]["node"]
    products = [n for n in nodes if n["op"] == "BatchMatMulV2"]
    ops = [n["op"] for n in nodes]
    # q, k, v come in with a heads axis and the scale is applied to the packed scores: nothing for split_heads
    assert len(products) == 4 and ops.count("Unpack") == 4
    assert not any(n["attr"]["adj_x"]["b"] or n["attr"]["adj_y"]["b"] for n in products)
    by_name = {n["name"]: n for n in nodes}
    assert not any(n["op"] == "Transpose" and by_name[n["input"][0].split(":")[0]]["op"] == "Transpose" for n in nodes)
    # jax.nn.softmax's 8 ops are TF.js's Softmax (the wasm test above checks the values)
    assert ops.count("Softmax") == 1 and not {"Exp", "Max", "Sum"} & set(ops)


def test_small_attention_runs_all_heads_in_one_plain_product_against_a_block_diagonal_operand(tmp_path):
    # ViT-Ti's form: heads too small for a product each; the wasm test above checks the values at batch 3
    case = dict(CASES)["linalg:attention_block_diagonal"]
    specs = [InputSpec(f"input_{i + 1}", shape, dtype) for i, (shape, dtype) in enumerate(case.inputs)]
    convert_function(case.fn, tmp_path / "out", specs)
    nodes = json.loads((tmp_path / "out" / "model.json").read_text())["modelTopology"]["node"]
    products = [n for n in nodes if n["op"] == "BatchMatMulV2"]
    ops = [n["op"] for n in nodes]
    assert len(products) == 2 and ops.count("Mul") == 2 and not {"Unpack", "Pack"} & set(ops), ops
    assert not any(n["attr"]["adj_x"]["b"] or n["attr"]["adj_y"]["b"] for n in products)
    # only the key's Transpose: the scores' pair around the Softmax is gone (softmax_transposed), the
    # output comes out in the merged-heads layout
    assert ops.count("Transpose") == 1 and ops.count("Softmax") == 1, ops


def test_masked_attention_folds_the_scale_and_adds_the_mask_per_head(tmp_path):
    case = dict(CASES)["linalg:attention_masked"]
    specs = [InputSpec(f"input_{i + 1}", shape, dtype) for i, (shape, dtype) in enumerate(case.inputs)]
    convert_function(case.fn, tmp_path / "out", specs)
    ops = [n["op"] for n in json.loads((tmp_path / "out" / "model.json").read_text())["modelTopology"]["node"]]
    # q, k, v projected by one matmul (q's 1/8 in its kernel), split into heads by one Split (a Transpose
    # per key head), merged by one ConcatV2 (fold_scale, split_heads, merge_qkv)
    assert ops.count("Softmax") == 2 and ops.count("Split") == 1 and ops.count("ConcatV2") == 1, ops
    assert ops.count("_FusedMatMul") == 1 and ops.count("Transpose") == 2, ops  # the output projection has no bias
    assert not {"Unpack", "Pack", "RealDiv"} & set(ops), ops


def test_gelu_between_matmuls_is_erf_mul_add_with_no_reshape_or_scalar_op(tmp_path):
    # jax.nn.gelu's 6 ops and the Reshape pair around them: t + t*erf(t), sqrt(1/2) in the kernels
    case = dict(CASES)["linalg:mlp_gelu"]
    convert_function(case.fn, tmp_path / "out", [InputSpec("input_1", *case.inputs[0])])
    nodes = json.loads((tmp_path / "out" / "model.json").read_text())["modelTopology"]["node"]
    ops = [n["op"] for n in nodes if n["op"] not in ("Const", "Placeholder")]
    first, second = (i for i, op in enumerate(ops) if op == "_FusedMatMul")
    assert ops[first + 1:second] == ["Erf", "Mul", "AddV2"], ops


def test_every_case_names_primitives_that_have_a_handler():
    known = set(supported_primitives()) | {"custom_jvp_call", "stop_gradient", "pjit", "scan"}  # the walker inlines these
    exercised = {p for _, case in CASES for p in case.primitives}
    assert exercised <= known, exercised - known
    # every family's handlers are exercised by its cases, at least the headline ones
    for primitive in ("dot_general", "conv_general_dilated", "gather", "sort", "top_k", "cumsum", "reduce_window_max",
                      "select_n", "dynamic_slice", "integer_pow", "erf", "argmax", "pad", "concatenate"):
        assert primitive in exercised, primitive


def test_docs_table_is_current():
    from tests.conftest import ROOT
    from topology.graphdef.ops import primitives_table

    doc = (ROOT / "docs" / "graph-model.md").read_text(encoding="utf-8")
    table = doc.split("<!-- primitives:start -->\n", 1)[1].split("\n<!-- primitives:end -->", 1)[0]
    assert table == primitives_table(), "regenerate the table: python -c 'from topology.graphdef.ops import primitives_table; print(primitives_table())'"


def test_schema_ops_are_tfjs_converters_op_list_and_the_schema_rejects_others(tmp_path):
    import json
    import re

    import jsonschema

    from tests.conftest import ROOT

    schema = json.loads((ROOT / "schemas" / "graph_model.schema.json").read_text())
    listed = set()
    for path in (ROOT / "node_modules/@tensorflow/tfjs-converter/dist/operations/op_list").glob("*.js"):
        listed |= set(re.findall(r"'tfOpName': '([A-Za-z0-9_]+)'", path.read_text()))
    assert set(schema["$defs"]["node"]["properties"]["op"]["enum"]) == listed  # the contract: tfjs-converter 4.22
    convert_function(lambda x: x * 2, tmp_path / "out", [InputSpec("x", (2,))])
    document = json.loads((tmp_path / "out" / "model.json").read_text())
    jsonschema.validate(document, schema)
    document["modelTopology"]["node"][-1]["op"] = "XlaCallModule"  # what jax2tf writes today: TF.js cannot run it
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(document))
