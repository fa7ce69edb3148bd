"""Inputs of at most ~10 MB that must end within 10 s and 300 MB (issue 19), and the output budget.

Each case is built here and run as a real CLI child process; the child's peak RSS and CPU time come
from the kernel (``os.wait4``). Wall time is bounded loosely (other work may share the two cores);
CPU time is what the conversion itself costs. ``FLAX2TFJS_HOSTILE_CODE=/old/checkout`` runs them on
other code: on the main of issue 19 each of them fails (exit 0 writing GBs, minutes, or GBs of RSS).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.hostile import builders
from tests.hostile.conftest import CODE
from tests.hostile.peak import run
from tests.hostile.test_hostile import assert_refused, cli, snapshot

BOUND_RSS = 300 << 20
BOUND_SECONDS = 10  # CPU seconds of the child
WALL = 60  # the child is killed (and the test fails) beyond this, whatever the machine's load


def assert_bounded(result, cpu: float = BOUND_SECONDS) -> None:
    assert result.peak_rss < BOUND_RSS, f"peak RSS {result.peak_rss >> 20} MiB"
    assert result.cpu_seconds < cpu, f"{result.cpu_seconds:.1f} s CPU"


# ---------------------------------------------------------------- the walker, bounded by the file


def test_a_list_of_ten_million_nils_ends_quickly_in_both_commands(tmp_path):
    ckpt = builders.nil_list_msgpack(tmp_path / "nils.msgpack")  # 9.4 MB
    out = tmp_path / "out"
    for result in (cli("inspect", ckpt, timeout=WALL), cli(ckpt, out, timeout=WALL)):
        assert_refused(result, "EMPTY_CHECKPOINT", {}, rss=BOUND_RSS)
        assert "9,900,000 nils" in result.stderr
        assert_bounded(result, cpu=3)
    assert not out.exists()


def test_a_million_copies_of_one_array_are_refused_by_the_leaf_cap(tmp_path):
    ckpt = builders.repeated_array_msgpack(tmp_path / "many.msgpack")  # 14 MB
    result = cli(ckpt, tmp_path / "out", timeout=WALL)
    assert_refused(result, "TOO_MANY_LEAVES", {}, rss=BOUND_RSS)
    assert "122,880 arrays" in result.stderr
    assert_bounded(result, cpu=4)
    assert not (tmp_path / "out").exists()


def test_sixty_thousand_tiny_dense_layers_convert_in_bounded_time_and_memory(tmp_path):
    ckpt = builders.many_dense_msgpack(tmp_path / "dense.msgpack")  # 3.9 MB, 120,000 tensors
    out = tmp_path / "out"
    # As a user runs it: without the suite's full JSON-schema check of model.json (tests/conftest.py).
    result = run([sys.executable, "-m", "writer", str(ckpt), str(out), "--quiet"], cwd=CODE,
                 env={"PYTHONPATH": str(CODE), "FLAX2TFJS_SCHEMA_CHECK": None}, timeout=WALL)
    assert result.returncode == 0, result.stderr[-600:]
    assert_bounded(result, cpu=5)
    document = json.loads((out / "model.json").read_text())
    weights = document["weightsManifest"][0]["weights"]
    assert len(weights) == 120_000 and len(document["modelTopology"]["model_config"]["config"]["layers"]) == 60_001
    assert sum((out / p).stat().st_size for p in document["weightsManifest"][0]["paths"]) == 120_000 * 4
    # model.json is written in pieces (memory): byte-identical to the one-shot serialisation
    from writer.model_json import dumps_model_json

    assert (out / "model.json").read_bytes() == dumps_model_json(document).encode("utf-8")


def test_an_orbax_tree_of_sixty_thousand_absent_arrays_fails_at_the_first(tmp_path, orbax_base):
    ckpt = builders.orbax_many_absent_leaves(orbax_base, tmp_path / "ck")
    result = cli("inspect", ckpt, timeout=WALL)
    assert_refused(result, "CORRUPT_CHECKPOINT", {}, rss=BOUND_RSS)
    assert "params/L0/kernel" in result.stderr
    assert_bounded(result, cpu=3)  # main opened all 60,000 in tensorstore first: 5.7 s CPU


# ---------------------------------------------------------------- the output budget


def _sparse_orbax(base: Path, folder: Path, rows: int = 4_000_000) -> Path:
    """The Orbax MLP with Dense_0's kernel claiming [rows, 4] (64 MB, under the per-tensor rule) and no chunks."""
    return builders.orbax_huge_claim(base, folder, claimed_bytes=rows * 4 * 4)


def test_an_orbax_folder_of_kilobytes_claiming_megabytes_is_refused_before_writing(tmp_path, orbax_base):
    ckpt = _sparse_orbax(orbax_base, tmp_path / "ck")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = snapshot(out)
    result = cli(ckpt, out / "model", timeout=WALL)
    assert_refused(result, "OUTPUT_BUDGET", {out: before}, rss=BOUND_RSS)
    assert "params/Dense_0/kernel" in result.stderr or "dense" in result.stderr.lower()
    assert "--allow-sparse" in result.stderr


def test_allow_sparse_writes_a_legitimately_sparse_checkpoint(tmp_path, orbax_base):
    ckpt = _sparse_orbax(orbax_base, tmp_path / "ck", rows=1_500_000)  # 24 MB of zeros from ~70 KB
    out = tmp_path / "out"
    assert cli(ckpt, out, timeout=WALL).error_code == "OUTPUT_BUDGET"
    result = cli(ckpt, out, "--allow-sparse", timeout=WALL)
    assert result.returncode == 0, result.stderr[-600:]
    document = json.loads((out / "model.json").read_text())
    assert document["weightsManifest"][0]["weights"][0]["shape"] == [1_500_000, 4]


def test_an_npz_of_deflated_zeros_is_refused_over_all_tensors_together(tmp_path):
    """Three 4095x4095 float32 members of zeros, each under the per-tensor rule (64 MiB), 200 MB together."""
    ckpt = tmp_path / "zeros.npz"
    side = 4095
    with zipfile.ZipFile(ckpt, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for i in range(3):
            with archive.open(f"params/Dense_{i}/kernel.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                              "shape": (side, side)})
                row = bytes(4 * side)
                for _ in range(side):
                    member.write(row)
            archive.writestr(f"params/Dense_{i}/bias.npy", builders.npy((side,), "<f4", bytes(4 * side)))
    assert ckpt.stat().st_size < 1 << 20
    result = cli(ckpt, tmp_path / "out", timeout=WALL)
    assert_refused(result, "OUTPUT_BUDGET", {}, rss=BOUND_RSS)
    assert "would write 201,277,440 bytes" in result.stderr and "largest:" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs the right to mount; skipped where there is none)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_is_said_before_writing(tmp_path, small_disk):
    import msgpack

    kernel = np.random.RandomState(0).randn(600, 1000).astype("float32")  # 2.4 MB on a 2 MiB disk
    tree = {"params": {"Dense_0": {"kernel": msgpack.ExtType(1, msgpack.packb([[600, 1000], "float32", kernel.tobytes()])),
                                   "bias": msgpack.ExtType(1, msgpack.packb([[1000], "float32", bytes(4000)]))}}}
    ckpt = tmp_path / "m.msgpack"
    ckpt.write_bytes(msgpack.packb(tree))
    result = cli(ckpt, small_disk / "out", timeout=WALL)
    assert_refused(result, "DISK_FULL", {small_disk: {}}, rss=BOUND_RSS)
    assert "bytes free" in result.stderr  # said up front, not after a failed write
    assert os.listdir(small_disk) == []


# ---------------------------------------------------------------- smaller items


def test_model_code_that_exits_is_a_coded_error(tmp_path):
    ckpt = builders.mlp_msgpack(tmp_path / "mlp.msgpack")
    code = tmp_path / "model.py"
    code.write_text("import flax.linen as nn\n"
                    "class Exits(nn.Module):\n    @nn.compact\n    def __call__(self, x):\n        raise SystemExit(0)\n"
                    "class Interrupts(nn.Module):\n    @nn.compact\n    def __call__(self, x):\n"
                    "        raise KeyboardInterrupt\n")
    for name in ("Exits", "Interrupts"):
        result = cli(ckpt, tmp_path / "out", "--module", f"{code}:{name}", "--input-shape", "8", timeout=WALL)
        assert_refused(result, "MODULE_EXITED", {}, rss=1 << 30)
        assert not (tmp_path / "out").exists()
    shown = cli("inspect", ckpt, "--module", f"{code}:Exits", "--input-shape", "8", timeout=WALL)
    assert_refused(shown, "MODULE_EXITED", {}, rss=1 << 30)


def test_metadata_and_shard_size_mistakes_are_refused(tmp_path):
    ckpt = builders.mlp_msgpack(tmp_path / "mlp.msgpack")
    (tmp_path / "a.json").write_text('["a"]')
    (tmp_path / "b.json").write_text('["b"]')
    (tmp_path / "lone.json").write_text('{"label": "\\ud800"}')
    out = tmp_path / "out"
    cases = [
        (("--metadata", f"k={tmp_path / 'a.json'}", "--metadata", f"k={tmp_path / 'b.json'}"), "BAD_METADATA", "twice"),
        (("--metadata", f"k={tmp_path / 'lone.json'}"), "BAD_METADATA", "surrogate"),
        (("--weight-shard-size-bytes", "100"), "BAD_OPTION", "4096"),
    ]
    for args, code, said in cases:
        result = cli(ckpt, out, *args, timeout=WALL)
        assert_refused(result, code, {}, rss=1 << 30)
        assert said in result.stderr
        assert not out.exists()


def test_the_python_api_refuses_tiny_shards_and_surrogates(tmp_path):
    from topology.vocabulary.errors import ConversionError
    from writer import to_tensorflowjs

    ckpt = builders.mlp_msgpack(tmp_path / "mlp.msgpack")
    for options, code in [({"weight_shard_size_bytes": 1}, "BAD_OPTION"), ({"metadata": {"k": "\ud800"}}, "BAD_METADATA")]:
        with pytest.raises(ConversionError) as err:
            to_tensorflowjs(ckpt, tmp_path / "out", **options)
        assert err.value.code == code
    assert not (tmp_path / "out").exists()
    assert to_tensorflowjs(ckpt, tmp_path / "out", weight_shard_size_bytes=4096).shards


# ---------------------------------------------------------------- verify and the model folder


def _escaping_models(earlier: Path, tmp_path: Path) -> dict[str, Path]:
    """Copies of a real conversion whose manifest reads bytes outside the folder, three ways."""
    outside = tmp_path / "outside.bin"
    shard = next(earlier.glob("group1-shard*.bin"))
    shutil.copy(shard, outside)
    models = {}
    for how in ("absolute", "dotdot", "symlink"):
        folder = tmp_path / how
        shutil.copytree(earlier, folder)
        document = json.loads((folder / "model.json").read_text())
        paths = document["weightsManifest"][0]["paths"]
        if how == "absolute":
            paths[0] = str(outside)
        elif how == "dotdot":
            paths[0] = "../outside.bin"
        else:
            (folder / paths[0]).unlink()
            (folder / paths[0]).symlink_to(outside)
        (folder / "model.json").write_text(json.dumps(document))
        models[how] = folder
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    models["deep"] = deep
    return models


def test_verify_reads_only_files_inside_the_model_folder(tmp_path, earlier_conversion):
    ckpt = builders.mlp_msgpack(tmp_path / "mlp.msgpack")
    for how, folder in _escaping_models(earlier_conversion, tmp_path).items():
        result = cli("verify", folder, ckpt, timeout=WALL)
        assert result.error_code == "MODEL_INVALID", (how, result.returncode, result.stderr[-600:])
        assert "Traceback" not in result.stderr and result.returncode != 0
        assert "outside" in result.stderr or "plain relative" in result.stderr or "nested" in result.stderr, how


def test_the_node_runner_refuses_shards_outside_the_folder(tmp_path, earlier_conversion, tfjs):
    from writer.tfjs_node import TfjsError

    assert tfjs.summary(earlier_conversion)["weights"]  # the original loads
    for how, folder in _escaping_models(earlier_conversion, tmp_path).items():
        with pytest.raises(TfjsError) as err:
            tfjs.summary(folder)
        assert how == "deep" or "outside the model folder" in str(err.value) or "plain relative" in str(err.value)


def test_model_file_is_the_one_rule(tmp_path):
    from writer.tfjs_files import UnsafeModelPath, model_file

    (tmp_path / "ok.bin").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.bin").symlink_to(tmp_path / "ok.bin")  # a symlink staying inside is fine
    (tmp_path / "out.bin").symlink_to("/etc/hostname")
    assert model_file(tmp_path, "ok.bin") == tmp_path / "ok.bin"
    assert model_file(tmp_path, "link.bin") == tmp_path / "link.bin"
    for bad in ["/etc/hostname", "../x.bin", "a//b", "./ok.bin", "a\\b", "out.bin", "sub", "", 7, None]:
        with pytest.raises(UnsafeModelPath):
            model_file(tmp_path, bad)


def test_export_savedmodel_refuses_an_escaping_manifest(tmp_path, earlier_conversion):
    folder = _escaping_models(earlier_conversion, tmp_path)["dotdot"]
    result = cli("export-savedmodel", folder, tmp_path / "saved", timeout=WALL)
    assert_refused(result, "MODEL_INVALID", {}, rss=1 << 30)
    assert not (tmp_path / "saved").exists()


def test_the_demo_serves_no_file_reached_through_a_symlink_out(tmp_path, earlier_conversion):
    import socket
    import time
    import urllib.error
    import urllib.request

    model = tmp_path / "model"
    shutil.copytree(earlier_conversion, model)
    (tmp_path / "secret.txt").write_text("secret")
    (model / "leak.bin").symlink_to(tmp_path / "secret.txt")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "writer", "demo", str(model), "--port", str(port)], cwd=CODE,
                            env={**os.environ, "PYTHONPATH": str(CODE)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + WALL
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}/model/"
        assert urllib.request.urlopen(base + "model.json", timeout=10).status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "leak.bin", timeout=10)
        assert err.value.code == 404
    finally:
        proc.terminate()
        proc.wait(10)
