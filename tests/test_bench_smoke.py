"""The benchmark suite runs end to end (quick mode), and the pieces it relies on are right.

No timing assertions (``--quick`` takes ~40 s on an idle 2-core machine; the timeout only
catches hangs): these tests check that ``python -m bench --quick`` finishes and writes
every expected key, that its synthetic Flax msgpack files are byte-identical to
``flax.serialization.to_bytes`` (chunked arrays included), that the performance changes keep
outputs identical, and that ``writer.commands.convert.all_steps`` converts every step.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

QUICK_SECTIONS = ["dataflow", "mnist", "sizes", "chunked", "all_steps", "tfjs"]  # optimize: only with --only (minutes of ResNet-18)


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--quiet", "--json", str(folder / "r.json"),
         "--docs", str(folder / "benchmarks.md"), "--scratch", str(folder / "scratch")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((folder / "r.json").read_text())
    results["_folder"] = folder
    return results


def test_quick_mode_writes_every_section(quick_results):
    assert quick_results["meta"]["quick"] is True
    assert quick_results["meta"]["sections"] == QUICK_SECTIONS
    for name in QUICK_SECTIONS:
        assert "error" not in quick_results[name], quick_results[name].get("error")
    assert set(quick_results["meta"]["machine"]) >= {"CPU", "RAM", "Python", "Node / @tensorflow/tfjs"}
    # The scratch folder (all generated checkpoints and outputs) is gone afterwards.
    assert not any((quick_results["_folder"] / "scratch").iterdir())


def _is_summary(data: dict) -> bool:
    return {"median", "low", "high", "n"} <= set(data) and data["low"] <= data["median"] <= data["high"]


def test_quick_mode_dataflow_rows(quick_results):
    data = quick_results["dataflow"]
    assert data["mnist"]["msgpack"]["heavy_imports"] == []  # no ml_dtypes, jsonschema, tensorstore, jax
    assert data["mnist"]["orbax"]["heavy_imports"] == []  # read directly since issue 22: no tensorstore
    for row in (data["mnist"]["msgpack"], data["mnist"]["orbax"], data["msgpack_1gb"], data["chunked"], data["orbax"]):
        assert _is_summary(row["wall_s"]) and _is_summary(row["peak_rss_bytes"])
    assert _is_summary(data["msgpack_1gb"]["ratio_to_cp"]) and _is_summary(data["orbax"]["ratio_to_read"])


def test_quick_mode_keys_and_checks(quick_results):
    mnist = quick_results["mnist"]
    for mode in ("float32", "uint8"):
        assert _is_summary(mnist[mode]["wall_s"]) and _is_summary(mnist[mode]["peak_rss_bytes"])
        assert mnist[mode]["output_bytes"] > 0
    assert [i["label"] for i in mnist["imports"]][0] == "python startup"
    assert mnist["importtime_top"] and all("module" in r for r in mnist["importtime_top"])

    rows = quick_results["sizes"]["rows"]
    assert {(r["format"], r["quantize"]) for r in rows} == {
        ("msgpack", "float32"), ("orbax", "float32"), ("msgpack", "uint8"), ("orbax", "uint8")}
    for row in rows:
        assert _is_summary(row["wall_s"]) and _is_summary(row["cp_s"]) and _is_summary(row["ratio_to_cp"])
        assert row["check"]["ok"], row["check"]
        assert row["check"]["exact"] == (row["quantize"] == "float32")
    assert any("read_only" in r and "dd_s" in r for r in rows)

    chunked = quick_results["chunked"]
    assert chunked["check"]["ok"] and chunked["check"]["kernel_sha256_equal"]
    assert all(s["equal"] for s in chunked["check"]["samples"].values())

    steps = quick_results["all_steps"]
    assert steps["check"]["ok"] and sorted(steps["check"]["steps"]) == [str(s) for s in steps["steps"]]

    tfjs = quick_results["tfjs"]
    assert [v["quantize"] for v in tfjs["variants"]] == ["float32", "float16", "uint16", "uint8"]
    for variant in tfjs["variants"]:
        assert 0.9 <= variant["accuracy"] <= 1.0
    assert tfjs["variants"][0]["agreement_with_flax"] == 1.0
    assert {(r["backend"], r["batch"]) for r in tfjs["node"]["rows"]} == {
        ("cpu", 1), ("cpu", 32), ("wasm", 1), ("wasm", 32)}
    assert "skipped" in tfjs["chromium"]


def test_quick_mode_renders_the_page(quick_results):
    folder = quick_results["_folder"]
    text = (folder / "benchmarks.md").read_text()
    assert "## Key table (targets of issue 7)" in text and "Quick mode" in text
    for image in ("bench_scaling_time.png", "bench_scaling_memory.png", "bench_tfjs_latency.png"):
        assert (folder / "img" / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"img/{image}" in text


def test_peak_rss_is_the_childs_own():
    from bench.measure import MB, run

    ballast = np.ones(300 * MB // 8)  # the measuring process is big...
    small = run([sys.executable, "-c", "pass"])
    big = run([sys.executable, "-c", "b = bytearray(200 * 2**20)"])
    assert small.ok and big.ok and ballast.sum() > 0
    assert small.peak_rss < 100 * MB  # ...but a child started from it reports only its own peak
    assert big.peak_rss > 200 * MB
    assert run([sys.executable, "-c", "raise SystemExit(3)"]).returncode == 3


# ------------------------------------------------------------------ the synthetic checkpoints


def test_streamed_msgpack_is_byte_identical_to_flax(tmp_path):
    from flax import serialization

    from bench import checkpoints

    tree = checkpoints.mlp_tree(24, 3, seed=5)
    checkpoints.write_flax_msgpack(tmp_path / "m.msgpack", tree)
    assert (tmp_path / "m.msgpack").read_bytes() == serialization.to_bytes(checkpoints.materialize(tree))


def test_streamed_chunked_msgpack_is_byte_identical_to_flax(tmp_path, monkeypatch):
    from flax import serialization

    from bench import checkpoints

    # Flax chunks arrays above MAX_CHUNK_SIZE (1 GiB); a small limit gives the same layout.
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 1000)
    tree = {"params": {"Dense_0": {"kernel": checkpoints.values(1, 0, "kernel", (30, 50)),
                                   "bias": np.zeros(50, np.float32)}},
            "step": 7, "scale": np.float32(0.5)}
    checkpoints.write_flax_msgpack(tmp_path / "c.msgpack", tree, chunk_bytes=1000)
    expected = serialization.to_bytes(tree)
    assert b"__msgpack_chunked_array__" in expected
    assert (tmp_path / "c.msgpack").read_bytes() == expected


# ------------------------------------------------------------------ the performance changes


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_blockwise_quantization_equals_whole_array_arithmetic(dtype):
    from writer import quantize

    rng = np.random.default_rng(3)
    values = (rng.standard_normal(quantize._BLOCK * 2 + 17) * 4).astype(np.float32)
    stored, meta = quantize.quantize(values, dtype)
    # The formula of the official converter, on the whole array at once.
    clipped = np.clip(values.astype(np.float64), meta["min"], meta["min"] + np.iinfo(dtype).max * meta["scale"])
    expected = np.round((clipped - meta["min"]) / meta["scale"]).astype(dtype)
    assert stored.dtype == np.dtype(dtype) and stored.shape == values.shape
    np.testing.assert_array_equal(stored, expected)


def test_background_digest_equals_content_sha256(tmp_path):
    import hashlib

    from writer.provenance import BackgroundDigest, content_sha256

    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "a.bin").write_bytes(bytes(range(256)) * 5000)
    (tmp_path / "ck" / "sub").mkdir()
    (tmp_path / "ck" / "sub" / "b").write_bytes(b"xyz")
    digest = BackgroundDigest(tmp_path / "ck")
    assert digest() == content_sha256(tmp_path / "ck")
    single = tmp_path / "ck" / "a.bin"
    assert BackgroundDigest(single)() == hashlib.sha256(single.read_bytes()).hexdigest()
    cancelled = BackgroundDigest(single)
    cancelled.cancel()
    assert cancelled() == hashlib.sha256(single.read_bytes()).hexdigest()  # recomputed when still asked for


def test_converted_metadata_records_the_checkpoint_hash(tmp_path):
    import hashlib

    from bench import checkpoints
    from writer.convert import convert

    source = tmp_path / "m.msgpack"
    checkpoints.write_mlp_msgpack(source, 16, 2)
    convert(source, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "model.json").read_text())["userDefinedMetadata"]["flax2tfjs"]
    assert meta["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


# ------------------------------------------------------------------ --all-steps


@pytest.fixture(scope="module")
def manager(tmp_path_factory) -> Path:
    import orbax.checkpoint as ocp

    from bench import checkpoints

    root = tmp_path_factory.mktemp("mgr") / "run"
    with ocp.CheckpointManager(root) as mgr:
        for k, step in enumerate((10, 20, 30)):
            mgr.save(step, args=ocp.args.StandardSave(checkpoints.materialize(checkpoints.mlp_tree(8, 2, seed=k))))
        mgr.wait_until_finished()
    return root


def test_all_steps_converts_every_step(manager, tmp_path):
    from bench import checkpoints, verify
    from writer.commands.convert.all_steps import convert_all_steps

    report = convert_all_steps(manager, tmp_path / "out")
    assert sorted(report.reports) == [10, 20, 30]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["step_10", "step_20", "step_30"]
    for k, step in enumerate((10, 20, 30)):
        assert report.reports[step].step == step
        got = {spec["name"]: verify.load_weight(spec, off, stream)
               for spec, off, stream in verify.weights(tmp_path / "out" / f"step_{step}")}
        np.testing.assert_array_equal(got["Dense_1/kernel"], checkpoints.values(k, 1, "kernel", (8, 8)))
    assert json.loads(json.dumps(report.to_json()))["steps"]["20"]["step"] == 20
    assert "3 step(s) converted" in report.render()


def test_all_steps_checks_every_destination_first(manager, tmp_path):
    from writer.commands.convert.all_steps import convert_all_steps
    from topology.vocabulary.errors import ConversionError

    (tmp_path / "out" / "step_30").mkdir(parents=True)
    (tmp_path / "out" / "step_30" / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError) as err:
        convert_all_steps(manager, tmp_path / "out")
    assert err.value.code == "OUTPUT_NOT_EMPTY" and "step_30" in err.value.message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["step_30"]  # nothing converted


def test_all_steps_skips_unfinished_saves(manager, tmp_path):
    import shutil

    from writer.commands.convert.all_steps import convert_all_steps

    root = tmp_path / "run"
    shutil.copytree(manager, root)
    shutil.copytree(root / "20", root / "40.orbax-checkpoint-tmp-123")
    report = convert_all_steps(root, tmp_path / "out")
    assert sorted(report.reports) == [10, 20, 30] and list(report.skipped) == [40]


def test_all_steps_refuses_a_single_checkpoint(tmp_path):
    from writer.commands.convert.all_steps import convert_all_steps
    from topology.vocabulary.errors import ConversionError

    for source in (ROOT / "examples" / "mnist_ckpt", ROOT / "README.md"):
        with pytest.raises(ConversionError) as err:
            convert_all_steps(source, tmp_path / "out")
        assert err.value.code == "STEP_NOT_FOUND" and str(source) in err.value.message
    with pytest.raises(ConversionError) as err:
        convert_all_steps(tmp_path / "missing", tmp_path / "out")
    assert err.value.code == "CHECKPOINT_NOT_FOUND"


def test_all_steps_excludes_step(manager, tmp_path):
    from writer.commands.convert.all_steps import convert_all_steps
    from writer.convert import ConvertOptions
    from topology.vocabulary.errors import ConversionError

    with pytest.raises(ConversionError) as err:
        convert_all_steps(manager, tmp_path / "out", ConvertOptions(step=10))
    assert err.value.code == "BAD_OPTION"


def test_all_steps_legacy_checkpoint_files(tmp_path):
    from flax import serialization

    from bench import checkpoints
    from writer.commands.convert.all_steps import convert_all_steps

    root = tmp_path / "legacy"
    root.mkdir()
    for k, step in enumerate((5, 15)):
        tree = checkpoints.materialize(checkpoints.mlp_tree(4, 2, seed=k))
        (root / f"checkpoint_{step}").write_bytes(serialization.to_bytes(tree))
    report = convert_all_steps(root, tmp_path / "out")
    assert sorted(report.reports) == [5, 15]
    assert report.reports[15].step == 15
