"""Issue 20: public models. Real transformers Flax classes with tiny configs, saved with save_pretrained and
converted from the folder alone (no model code), predicted in real TF.js and compared with the transformers
model's own call. The representative set runs by default; FLAX2TFJS_ALL_PUBLIC=1 runs every case of
bench/public_models.py (which also writes docs/public-models.md), in each format. The cases that do not
convert today (bench.public_models.KNOWN_FAILURES, with the coded error each stops with) are strict xfails:
one that starts passing fails the run until it is taken off the list."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

pytest.importorskip("transformers")

from bench.public_models import CASES, FORMATS, KNOWN_FAILURES, build_folder, input_shape, run_case  # noqa: E402
from writer import ConversionError, to_tensorflowjs  # noqa: E402
from tests.conftest import ROOT, assert_close  # noqa: E402
from writer.cli import main  # noqa: E402

ALL = os.environ.get("FLAX2TFJS_ALL_PUBLIC") == "1"


def _param(case, format="layers-model"):
    marks = []
    if case.known_failure(format):
        marks.append(pytest.mark.xfail(strict=True, reason=case.known_failure(format)))
    if not (case.core or ALL):
        marks.append(pytest.mark.skip(reason="full public set: FLAX2TFJS_ALL_PUBLIC=1 or python -m bench.public_models"))
    return pytest.param(case, id=case.name, marks=marks)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("public")


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A tiny BERT saved with save_pretrained (max_position_embeddings 64)."""
    folder = tmp_path_factory.mktemp("bert") / "bert"
    build_folder(next(case for case in CASES if case.name == "bert"), folder)
    return folder


def _assert_matches(case, outcome, written):
    assert outcome.status == "converted", f"{outcome.status}: {outcome.detail}"
    assert outcome.written == written
    assert outcome.max_abs_error <= 1e-4, outcome.max_abs_error
    assert outcome.top1 == 1.0
    expected_inputs = {"text": ["input_ids"], "vision": ["pixel_values"], "audio": ["input_values"],
                       "module": ["input"]}[case.kind]
    assert outcome.inputs[:1] == expected_inputs


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_public_model_converts_from_its_folder_and_matches(case, tfjs, work):
    _assert_matches(case, run_case(case, tfjs, work), "layers-model")


@pytest.mark.parametrize("case", [_param(case, "graph-model") for case in CASES])
def test_public_model_as_a_graph_model_matches(case, tfjs, work):
    """The same folder (saved once per module: run_case reuses it) with --format graph-model, in tf.loadGraphModel."""
    _assert_matches(case, run_case(case, tfjs, work, "graph-model"), "graph-model")


@pytest.mark.parametrize("case", [_param(case, "auto") for case in CASES])
def test_auto_writes_a_layers_model_when_it_can_and_a_graph_model_otherwise(case, tfjs, work):
    layers_ok = not case.known_failure("layers-model")
    _assert_matches(case, run_case(case, tfjs, work, "auto"), "layers-model" if layers_ok else "graph-model")


def test_cli_converts_and_verifies_a_bert_folder(tmp_path, capsys, bert_folder):
    """`python -m writer FOLDER out/`; the inputs are named in model.json; verify takes the same flags and agrees."""
    assert main([str(bert_folder), str(tmp_path / "out"), "--input-shape", "8", "-q"]) == 0
    document = json.loads((tmp_path / "out" / "model.json").read_text())
    inputs = document["userDefinedMetadata"]["flax2tfjs"]["inputs"]
    assert [(i["name"], i["shape"], i["dtype"]) for i in inputs] == [
        ("input_ids", [8], "int32"), ("attention_mask", [8], "int32"), ("token_type_ids", [8], "int32")]
    assert document["userDefinedMetadata"]["huggingface"]["architecture"] == "FlaxBertModel"
    layers = document["modelTopology"]["model_config"]["config"]["input_layers"]
    assert [layer[0] for layer in layers] == ["input_ids", "attention_mask", "token_type_ids"]
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "out"), str(bert_folder), "--input-shape", "8",
                 "--input-dtype", "int32", "--samples", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"]
    assert main(["inspect", str(bert_folder), "--input-shape", "8", "--json"]) == 0  # inspect reads the folder too
    inspected = json.loads(capsys.readouterr().out)
    assert inspected["graph"]["topology"] == "traced" and inspected["notices"][0]["code"] == "HF_FOLDER"


def test_default_sequence_length_comes_from_the_config(tmp_path, bert_folder):
    report = to_tensorflowjs(bert_folder, tmp_path / "out")  # max_position_embeddings 64 < 128
    assert [spec.shape for spec in report.inputs] == [(64,)] * 3


def _config_folder(tmp_path, config: dict, weights: bool = True):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if weights:
        (folder / "flax_model.msgpack").write_bytes(b"\x80")  # an empty msgpack map: never read before the errors
    return folder


@pytest.mark.parametrize("config, weights, code", [
    ({"model_type": "bert", "architectures": ["BertModel"]}, False, "HF_NO_FLAX_WEIGHTS"),
    ({"model_type": "bert", "architectures": ["BertForNothing"]}, True, "HF_UNKNOWN_ARCHITECTURE"),
    ({"model_type": "bert"}, True, "HF_UNKNOWN_ARCHITECTURE"),
    ({"model_type": "bart", "architectures": ["BartModel"], "d_model": 16, "encoder_layers": 1, "decoder_layers": 1,
      "encoder_attention_heads": 2, "decoder_attention_heads": 2, "vocab_size": 20}, True, "HF_UNSUPPORTED_MODEL"),
], ids=["no-flax-weights", "unknown-class", "no-architectures", "encoder-decoder"])
def test_hf_folder_problems_are_coded(tmp_path, capsys, config, weights, code):
    folder = _config_folder(tmp_path, config, weights)
    assert main([str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error[{code}]") and "\nhint: " in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_without_transformers_the_error_names_the_pip_command(tmp_path, monkeypatch):
    import importlib.util

    folder = _config_folder(tmp_path, {"model_type": "bert", "architectures": ["BertModel"]})
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else find_spec(name, *a))
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(folder, tmp_path / "out")
    assert err.value.code == "TRANSFORMERS_NOT_INSTALLED" and "pip install" in err.value.hint
    assert "transformers==" in err.value.hint


def test_wrong_input_shape_for_a_text_folder_is_coded(tmp_path, bert_folder):
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(bert_folder, tmp_path / "out", input_shape=(8, 2))
    assert err.value.code == "HF_INPUT_SHAPE" and not (tmp_path / "out").exists()


def test_the_public_set_and_its_page_agree():
    """docs/public-models.md (written by python -m bench.public_models) has a row for every case."""
    assert set(KNOWN_FAILURES) == set(FORMATS)
    assert all(set(failures) <= {case.name for case in CASES} for failures in KNOWN_FAILURES.values())
    assert {case.name for case in CASES if case.core} >= {"bert", "gpt2", "llama", "clip-vision", "wav2vec2"}
    assert input_shape(CASES[0]) == (8,)
    page = (ROOT / "docs" / "public-models.md").read_text()
    table = page.split("What stops the rest")[0]
    header = "| model | Flax class | inputs | " + " | ".join(f"`{f}`" for f in FORMATS) + " |"
    assert header in table.splitlines()
    rows = re.findall(r"^\| ([\w-]+) \| `", table, re.M)
    assert rows == [case.name for case in CASES]
    for format, failures in KNOWN_FAILURES.items():  # the page says what the tests expect
        for name in failures:
            assert re.search(rf"^\| {name} \| `{format}` \| error\[", page, re.M), (name, format)


def test_call_chooses_the_inputs_of_a_folder(tmp_path, tfjs, bert_folder):
    """--call '(input_ids=*)': one input; the mask and token types are made as transformers makes them."""
    import transformers

    report = to_tensorflowjs(bert_folder, tmp_path / "out", input_shape=(8,), call="(input_ids=*)")
    assert [(spec.name, spec.dtype) for spec in report.inputs] == [("input_ids", "int32")]
    ids = np.random.RandomState(4).randint(2, 99, (2, 8)).astype(np.int32)
    model = transformers.FlaxBertModel.from_pretrained(bert_folder, local_files_only=True)
    expected = np.asarray(model(ids, train=False)[0])
    assert_close(tfjs.predict(tmp_path / "out", [ids]).outputs[0], expected)
    with pytest.raises(ConversionError) as err:
        to_tensorflowjs(bert_folder, tmp_path / "out2", input_dtype="float32")
    assert err.value.code == "INPUT_DTYPE_MISMATCH"
