"""The weight data path (issue 13): kernel copies, slices and prefetching write the same bytes as
loading every tensor whole, memory stays bounded by a buffer, and a checkpoint-only conversion
imports nothing it does not need.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import flax.serialization as fser
import ml_dtypes
import numpy as np
import pytest

from bench.checkpoints import write_flax_msgpack, write_mlp_msgpack
from bench.measure import MB, run
from tests.conftest import ROOT
from topology.graph import WeightBinding
from writer import shards, weights
from topology.vocabulary.errors import ConversionError, Notices
from writer.quantize import QuantizeOptions
from writer.readers import read_checkpoint


def _tree(rng: np.random.RandomState) -> dict:
    return {"params": {
        "big": rng.randn(37, 301).astype(np.float32),  # spans slices and shards
        "chunked": rng.randn(50, 40).astype(np.float32),  # Flax splits it (MAX_CHUNK_SIZE below)
        "bf16": rng.randn(33, 17).astype(ml_dtypes.bfloat16),
        "f64": rng.randn(9, 5),
        "i32": rng.randint(-1000, 1000, size=(70,)).astype(np.int32),
        "f16": rng.randn(129).astype(np.float16),
        "flat": np.full((4, 3), 0.5, np.float32),  # min == max under uint8
        "empty": np.zeros((0, 3), np.float32),
        "bias": rng.randn(7).astype(np.float32),
    }}


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(fser, "MAX_CHUNK_SIZE", 1000)
    path = tmp_path / "mixed.msgpack"
    path.write_bytes(fser.to_bytes(_tree(np.random.RandomState(0))))
    return path


def _bindings(path: Path) -> list[tuple[str, WeightBinding]]:
    refs = read_checkpoint(path).tensors
    out = [(f"w/{p[-1]}", WeightBinding(p[-1], tuple(ref.shape), tensor=ref)) for p, ref in refs.items()]
    big = refs[("params", "big")]  # a transposed kernel: the whole-tensor route
    out.append(("w/big_t", WeightBinding("k", (301, 37), tensor=big, transform=lambda a: a.T)))
    out.append(("w/const", WeightBinding("c", (3,), constant=np.arange(3, dtype=np.float32))))
    return out


def _write(path: Path, folder: Path, quantize: str | None, **kw) -> tuple[dict, dict[str, bytes], Notices]:
    folder.mkdir()
    notices = Notices()
    written = weights.write_weights(_bindings(path), folder, 1000, QuantizeOptions(quantize), notices, **kw)
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    return written.manifest_group, files, notices


@pytest.mark.parametrize("quantize", [None, "float16", "uint8", "uint16"])
def test_streamed_and_copied_bytes_equal_the_whole_tensor_path(tmp_path, checkpoint, monkeypatch, quantize):
    monkeypatch.setattr(weights, "SLICE_BYTES", 512)  # many slices per tensor
    routes = [weights.route(b, quantize) for _, b in _bindings(checkpoint)]
    assert routes.count("whole") == 2 and ("copy" in routes) == (quantize is None) and "stream" in routes
    new = _write(checkpoint, tmp_path / "new", quantize)
    monkeypatch.setattr(weights, "route", lambda binding, qdtype: "whole")  # the old path: load each tensor whole
    old = _write(checkpoint, tmp_path / "old", quantize)
    assert new[0] == old[0]
    assert new[1] == old[1]
    assert [n.message for n in new[2].items] == [n.message for n in old[2].items]
    assert any("bfloat16" in n.message for n in new[2].items)


@pytest.mark.parametrize("methods", [["sendfile", "buffered"], ["buffered"]])
def test_copy_fallbacks_write_the_same_bytes(tmp_path, checkpoint, monkeypatch, methods):
    reference = _write(checkpoint, tmp_path / "kernel", None)[1]
    monkeypatch.setattr(shards, "_COPY_METHODS", list(methods))
    assert _write(checkpoint, tmp_path / "fallback", None)[1] == reference


def test_copy_range_falls_back_when_the_kernel_refuses(tmp_path, monkeypatch):
    import errno

    def refuse(*args):
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    monkeypatch.setattr(shards, "_COPY_METHODS", ["copy_file_range", "sendfile", "buffered"])
    src = tmp_path / "src"
    src.write_bytes(bytes(range(200)))
    fd = os.open(src, os.O_RDONLY)
    try:
        with shards.ShardWriter(tmp_path, 150, 64) as writer:
            writer.copy_from(fd, 50, 150)
    finally:
        os.close(fd)
    assert shards._COPY_METHODS[0] == "sendfile"
    got = b"".join((tmp_path / n).read_bytes() for n in shards.shard_names(150, 64))
    assert got == bytes(range(50, 200))


@pytest.mark.parametrize("quantize", [None, "uint8"])
def test_nonfinite_values_in_a_late_slice_are_counted_and_refused(tmp_path, monkeypatch, quantize):
    monkeypatch.setattr(weights, "SLICE_BYTES", 256)
    values = np.ones(1000, np.float32)
    values[[3, 700, 999]] = [np.nan, np.inf, -np.inf]
    path = tmp_path / "nan.msgpack"
    path.write_bytes(fser.to_bytes({"params": {"w": values}}))
    ref = read_checkpoint(path).tensors[("params", "w")]
    binding = [("d/w", WeightBinding("w", (1000,), tensor=ref))]
    assert weights.route(binding[0][1], quantize) == ("copy" if quantize is None else "stream")
    with pytest.raises(ConversionError) as info:
        weights.write_weights(binding, tmp_path, 1 << 20, QuantizeOptions(quantize), Notices())
    assert info.value.code == "NONFINITE_WEIGHT" and "3 NaN/Inf value(s) out of 1000" in str(info.value)
    out = tmp_path / "allowed"
    out.mkdir()
    weights.write_weights(binding, out, 1 << 20, QuantizeOptions(), Notices(), allow_nonfinite=True)
    assert (out / "group1-shard1of1.bin").read_bytes() == values.tobytes()


def test_truncated_file_during_copy_is_a_clear_error(tmp_path):
    path = tmp_path / "t.msgpack"
    path.write_bytes(fser.to_bytes({"params": {"w": np.ones(5000, np.float32)}}))
    ref = read_checkpoint(path).tensors[("params", "w")]
    os.truncate(path, path.stat().st_size - 100)  # shrinks after it was read
    with pytest.raises(ConversionError) as info:
        weights.write_weights([("d/w", WeightBinding("w", (5000,), tensor=ref))], tmp_path, 1 << 20,
                              QuantizeOptions(), Notices(), allow_nonfinite=True)
    assert info.value.code == "TRUNCATED_CHECKPOINT"


def _chunked_copy(monkeypatch, chunk: int = 64) -> None:
    """Every "copy" tensor through the chunked path, shared by two threads, in tiny chunks."""
    monkeypatch.setattr(weights, "SMALL_COPY_BYTES", 0)
    monkeypatch.setattr(weights, "PARALLEL_COPY_BYTES", 0)
    monkeypatch.setattr(weights, "COPY_CHUNK_BYTES", chunk)


@pytest.mark.parametrize("allow_nonfinite", [False, True])
def test_two_thread_chunked_copy_writes_the_same_bytes(tmp_path, checkpoint, monkeypatch, allow_nonfinite):
    reference = _write(checkpoint, tmp_path / "ref", None)  # small tensors: read whole, one thread
    _chunked_copy(monkeypatch)
    threads = []
    start = weights.threading.Thread.start
    monkeypatch.setattr(weights.threading.Thread, "start", lambda t: (threads.append(t.name), start(t)))
    got = _write(checkpoint, tmp_path / "new", None, allow_nonfinite=allow_nonfinite)
    assert "flax2tfjs-copy" in threads  # the second thread did run
    assert got[0] == reference[0] and got[1] == reference[1]


def test_two_thread_chunked_copy_counts_every_nonfinite_value(tmp_path, monkeypatch):
    _chunked_copy(monkeypatch, chunk=256)
    values = np.ones(5000, np.float32)
    values[[0, 63, 64, 2500, 4999]] = [np.nan, np.inf, -np.inf, np.nan, np.inf]  # in chunks of both threads
    path = tmp_path / "nan.msgpack"
    path.write_bytes(fser.to_bytes({"params": {"w": values}}))
    binding = [("d/w", WeightBinding("w", (5000,), tensor=read_checkpoint(path).tensors[("params", "w")]))]
    with pytest.raises(ConversionError) as info:
        weights.write_weights(binding, tmp_path, 1000, QuantizeOptions(), Notices())
    assert info.value.code == "NONFINITE_WEIGHT" and "5 NaN/Inf value(s) out of 5000" in str(info.value)
    out = tmp_path / "allowed"
    out.mkdir()
    weights.write_weights(binding, out, 1000, QuantizeOptions(), Notices(), allow_nonfinite=True)
    assert b"".join((out / n).read_bytes() for n in shards.shard_names(20000, 1000)) == values.tobytes()


@pytest.mark.parametrize("allow_nonfinite", [False, True])
def test_truncated_file_during_chunked_copy_is_a_clear_error(tmp_path, monkeypatch, allow_nonfinite):
    _chunked_copy(monkeypatch, chunk=1024)
    path = tmp_path / "t.msgpack"
    path.write_bytes(fser.to_bytes({"params": {"w": np.ones(5000, np.float32)}}))
    ref = read_checkpoint(path).tensors[("params", "w")]
    os.truncate(path, path.stat().st_size - 100)
    with pytest.raises(ConversionError) as info:
        weights.write_weights([("d/w", WeightBinding("w", (5000,), tensor=ref))], tmp_path, 1 << 20,
                              QuantizeOptions(), Notices(), allow_nonfinite=allow_nonfinite)
    assert info.value.code == "TRUNCATED_CHECKPOINT"


def test_shard_writer_places_reserved_ranges_written_out_of_order(tmp_path):
    data = bytes(range(256)) * 4
    with shards.ShardWriter(tmp_path, len(data), 300) as writer:
        start = writer.reserve(len(data))
        for at in reversed(range(0, len(data), 100)):  # backwards, across shard boundaries
            writer.write_at(start + at, data[at:at + 100])
    assert b"".join((tmp_path / n).read_bytes() for n in shards.shard_names(len(data), 300)) == data
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match="not filled"):
        with shards.ShardWriter(tmp_path / "half", 10, 300) as writer:
            writer.write_at(writer.reserve(10), b"12345")  # half of the range never written


def test_prefetch_hands_on_errors_and_stops_its_thread():
    def items():
        yield 1
        raise ValueError("damaged")

    with weights._Prefetch(items()) as pieces:
        assert next(pieces) == 1
        with pytest.raises(ValueError, match="damaged"):
            next(pieces)
    endless = weights._Prefetch(iter(range(10**9)))
    next(endless)
    endless.__exit__(None, None, None)  # a writer that fails mid-way: the thread must end
    assert not endless._thread.is_alive()


def test_prefetch_runs_one_ahead_and_loads_a_whole_tensor_alone():
    import time

    log = []

    def items():
        for i in range(3):
            log.append(f"made {i}")
            yield i
        yield weights._Prefetch.DRAIN
        log.append("made whole")
        yield "whole"

    with weights._Prefetch(items()) as pieces:
        for _ in range(4):
            got = next(pieces)
            time.sleep(0.05)  # writing; the thread runs ahead meanwhile
            log.append(f"wrote {got}")
    assert log.index("made 1") < log.index("wrote 0")  # overlap: the next is made while one is written
    assert log.index("made 2") > log.index("wrote 0")  # but never two ahead
    assert log.index("made whole") > log.index("wrote 2")  # and a whole tensor only once the writer is done


def _peak_rss(args: list[str]) -> int:
    env = {k: v for k, v in os.environ.items() if k != "FLAX2TFJS_SCHEMA_CHECK"}
    result = run([sys.executable, "-m", "writer", *args, "--quiet"], cwd=ROOT, env=env, timeout=300)
    assert result.ok, result.stderr[-2000:]
    return result.peak_rss


@pytest.mark.parametrize("extra", [[], ["--quantize", "uint8"]])
def test_peak_memory_is_bounded_by_a_buffer_not_the_tensor(tmp_path, extra):
    # One Dense whose kernel is 144 MiB: the old path held it whole (and its float64 scratch).
    checkpoint = tmp_path / "wide.msgpack"
    write_mlp_msgpack(checkpoint, width=6144, layers=1)
    peak = _peak_rss([str(checkpoint), str(tmp_path / "out"), *extra])
    assert peak < 110 * MB, f"peak RSS {peak / MB:.0f} MB for a 144 MiB tensor"


_IMPORT_PROBE = """
import sys
from writer.cli import main
code = main([sys.argv[1], sys.argv[2], "--quiet"])
heavy = [m for m in ("ml_dtypes", "jsonschema", "tensorstore", "jax", "flax", "msgpack") if m in sys.modules]
print(code, " ".join(heavy))
"""


@pytest.mark.parametrize("kind", ["msgpack", "npz"])
def test_checkpoint_only_conversion_imports_nothing_heavy(tmp_path, kind):
    # The versions pip resolves today (ml_dtypes 0.7.0: 0.7-1.5 s to import) must not be paid for
    # a checkpoint that needs none of them: a new top-level import shows up here.
    rng = np.random.RandomState(0)
    params = {"Dense_0": {"kernel": rng.randn(784, 32).astype(np.float32), "bias": np.zeros(32, np.float32)},
              "Dense_1": {"kernel": rng.randn(32, 10).astype(np.float32), "bias": np.zeros(10, np.float32)}}
    if kind == "msgpack":
        checkpoint = tmp_path / "m.msgpack"
        write_flax_msgpack(checkpoint, {"params": params})
    else:
        checkpoint = tmp_path / "m.npz"
        np.savez(checkpoint, **{f"params/{l}/{w}": v for l, ws in params.items() for w, v in ws.items()})
    env = {k: v for k, v in os.environ.items() if k != "FLAX2TFJS_SCHEMA_CHECK"}
    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, str(checkpoint), str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["0"], f"imported: {proc.stdout}"
    manifest = json.loads((tmp_path / "out" / "model.json").read_text())["weightsManifest"]
    got = b"".join((tmp_path / "out" / p).read_bytes() for p in manifest[0]["paths"])
    want = b"".join(params[l][w].tobytes() for l in ("Dense_0", "Dense_1") for w in ("kernel", "bias"))
    assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest()


def test_orbax_bands_of_chunks_stream_the_same_bytes(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    rng = np.random.RandomState(1)
    tree = {"params": {"k": rng.randn(300, 50).astype(np.float32), "b": rng.randn(50).astype(np.float32),
                       "h": rng.randn(64, 8).astype(np.float16)}}
    save_args = {"params": {"k": ocp.SaveArgs(chunk_byte_size=4000), "b": ocp.SaveArgs(),
                            "h": ocp.SaveArgs(chunk_byte_size=256)}}
    with ocp.StandardCheckpointer() as saver:
        saver.save(tmp_path / "ck", tree, save_args=save_args)
    ck = read_checkpoint(tmp_path / "ck")
    ref = ck.tensors[("params", "k")]
    bands = list(ref.slices(4000 * 3))
    assert len(bands) > 3 and np.concatenate(bands).tobytes() == tree["params"]["k"].tobytes()
    monkeypatch.setattr(weights, "SLICE_BYTES", 2048)
    for quantize in (None, "uint8"):
        bindings = [(f"w/{p[-1]}", WeightBinding(p[-1], tuple(r.shape), tensor=r)) for p, r in ck.tensors.items()]
        assert {weights.route(b, quantize) for _, b in bindings} == {"stream"}
        new, old = tmp_path / f"new{quantize}", tmp_path / f"old{quantize}"
        new.mkdir(), old.mkdir()
        a = weights.write_weights(bindings, new, 1000, QuantizeOptions(quantize), Notices())
        with monkeypatch.context() as m:
            m.setattr(weights, "route", lambda binding, qdtype: "whole")
            b = weights.write_weights(bindings, old, 1000, QuantizeOptions(quantize), Notices())
        assert a.manifest_group == b.manifest_group
        assert [p.read_bytes() for p in sorted(new.iterdir())] == [p.read_bytes() for p in sorted(old.iterdir())]
    ck.close()
