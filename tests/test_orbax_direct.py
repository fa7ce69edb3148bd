"""The direct Orbax reader (no tensorstore) against the tensorstore one: same bytes out, on every layout.

One subprocess saves a small MLP in each layout (``tests/orbax_layouts.py``, two CPU devices for the
sharded save); each is converted twice, with ``FLAX2TFJS_ORBAX_READER=tensorstore`` and without, and
every output file must be byte-identical. Damage the direct reader cannot read must still end in a
coded error (through the tensorstore fallback).
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from topology.vocabulary.errors import ConversionError
from tests.orbax_layouts import LAYOUTS
from writer import to_tensorflowjs
from writer.readers.ocdbt import BTREE_MAGIC, MANIFEST_MAGIC, OcdbtReader, Unreadable, crc32c
from writer.readers.orbax import read_orbax
from writer.readers.orbax_direct import READER_ENV, open_direct

ROOT = Path(__file__).resolve().parents[1]
FALLBACK_ONLY = {"zarr3"}  # read by tensorstore, transparently


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("orbax_layouts")
    subprocess.run([sys.executable, "-m", "tests.orbax_layouts", str(folder)], cwd=ROOT, check=True,
                   capture_output=True)
    return folder


def _convert(source: Path, out: Path, monkeypatch, reader: str) -> dict[str, bytes]:
    monkeypatch.setenv(READER_ENV, reader)
    to_tensorflowjs(source, out, input_shape=(20,))
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _refused_as_corrupt(folder) -> ConversionError:
    """``read_orbax(folder)`` stops with CORRUPT_CHECKPOINT (never a traceback, never tensorstore's abort)."""
    with pytest.raises(ConversionError) as err:
        read_orbax(folder)
    assert err.value.code == "CORRUPT_CHECKPOINT"
    return err.value


@pytest.mark.parametrize("layout", LAYOUTS)
def test_both_readers_convert_to_the_same_bytes(layouts, tmp_path, monkeypatch, layout):
    source = layouts / layout
    names = [f"params.Dense_{i}.{w}" for i in (0, 1) for w in ("kernel", "bias")]
    use_ocdbt = (source / "manifest.ocdbt").is_file()
    direct = open_direct(source, "zarr3" if layout == "zarr3" else "zarr", use_ocdbt, names)
    assert (direct is None) == (layout in FALLBACK_ONLY)

    fast = _convert(source, tmp_path / "direct", monkeypatch, "direct")
    slow = _convert(source, tmp_path / "tensorstore", monkeypatch, "tensorstore")
    assert list(fast) == list(slow) and "model.json" in fast
    assert fast == slow

    # The tensors themselves, whole and in bands of single chunk rows (chunked and sharded layouts).
    monkeypatch.setenv(READER_ENV, "direct")
    ours = read_orbax(source)
    monkeypatch.setenv(READER_ENV, "tensorstore")
    theirs = read_orbax(source)
    for path, ref in ours.tensors.items():
        want = theirs.tensors[path].load()
        got = ref.load()
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()
        bands = list(ref.slices(64))
        assert np.concatenate(bands).tobytes() == want.tobytes()


def test_the_readme_command_never_imports_tensorstore(tmp_path):
    code = ("import runpy, sys\n"
            f"sys.argv = ['flax2tfjs', 'examples/mnist_ckpt', {str(tmp_path / 'out')!r}]\n"
            "try:\n    runpy.run_module('writer', run_name='__main__')\n"
            "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
            "assert 'tensorstore' not in sys.modules and 'ml_dtypes' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    assert (tmp_path / "out" / "model.json").is_file()


# ---------------------------------------------------------------- damage


def _varint(n: int) -> bytes:
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


def _frame(magic: int, body: bytes) -> bytes:
    """An uncompressed OCDBT manifest or node around ``body``, with a correct length and crc32c."""
    head = struct.pack(">I", magic) + struct.pack("<Q", 4 + 8 + 2 + len(body) + 4) + b"\x00\x00"
    return head + body + struct.pack("<I", crc32c(head + body))


def _manifest(root_file: bytes, offset: int, length: int, height: int) -> bytes:
    config = bytes(16) + b"\x00" + _varint(1024) + _varint(1 << 20) + b"\x04" + b"\x00"  # no compression
    table = b"\x01" + _varint(len(root_file)) + b"\x00" + root_file
    version = b"\x01" + b"\x01" + bytes([height]) + b"\x00" + _varint(offset) + _varint(length)
    version += b"\x00\x00\x00" + bytes(8) + b"\x00"  # statistics, commit time, no version nodes
    return _frame(MANIFEST_MAGIC, config + table + version)


def _self_referencing_node(path: bytes, length: int) -> bytes:
    """An interior node (height 1) whose only child is itself."""
    body = b"\x01" + b"\x01" + _varint(len(path)) + b"\x00" + path  # height, data file table
    body += b"\x01" + b"\x01" + b"\x00" + b"a"  # one entry: key "a", subtree prefix 0
    body += b"\x00" + b"\x00" + _varint(length) + b"\x00\x00\x00"  # file 0, offset 0, length; stats
    return _frame(BTREE_MAGIC, body)


def _forge(layouts: Path, target: Path, manifest: bytes, files: dict[str, bytes]) -> Path:
    shutil.copytree(layouts / "ocdbt-f32", target)
    (target / "manifest.ocdbt").write_bytes(manifest)
    for name, data in files.items():
        (target / name).write_bytes(data)
    return target


def test_a_cycle_in_the_btree_ends_in_a_coded_error(layouts, tmp_path):
    node = _self_referencing_node(b"d/loop", 0)
    node = _self_referencing_node(b"d/loop", len(node))  # same length: the node now points at itself
    folder = _forge(layouts, tmp_path / "ck", _manifest(b"d/loop", 0, len(node), 1), {"d/loop": node})
    with pytest.raises(Unreadable):
        OcdbtReader(folder)
    _refused_as_corrupt(folder)


def test_a_root_past_the_end_of_its_file_is_refused_before_reading(layouts, tmp_path):
    folder = _forge(layouts, tmp_path / "ck", _manifest(b"d/small", 0, 1 << 40, 0), {"d/small": b"x" * 100})
    with pytest.raises(Unreadable, match="past its end"):
        OcdbtReader(folder)
    _refused_as_corrupt(folder)


def test_a_flipped_byte_in_a_node_fails_its_checksum_and_falls_back(layouts, tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(layouts / "ocdbt-f32", folder)
    db = OcdbtReader(folder)
    assert len(db.keys()) == 8
    manifest = bytearray((folder / "manifest.ocdbt").read_bytes())
    manifest[20] ^= 0xFF
    (folder / "manifest.ocdbt").write_bytes(bytes(manifest))
    with pytest.raises(Unreadable, match="crc32c"):
        OcdbtReader(folder)
    assert open_direct(folder, "zarr", True, ["params.Dense_0.kernel"]) is None
    _refused_as_corrupt(folder)


def test_a_chunk_declaring_a_huge_size_is_not_inflated(layouts, tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(layouts / "plain-f32", folder)
    chunk = folder / "params.Dense_0.kernel" / "0.0"
    # A zstd frame header declaring 2**40 bytes of content (single segment, 8-byte size field).
    chunk.write_bytes(b"\x28\xb5\x2f\xfd" + b"\xe0" + struct.pack("<Q", 1 << 40) + b"\x01\x00\x00")
    ck = read_orbax(folder)
    with pytest.raises(ConversionError) as err:
        ck.tensors[("params", "Dense_0", "kernel")].load()
    assert err.value.code == "CORRUPT_CHECKPOINT" and "params/Dense_0/kernel" in err.value.message


def test_a_deep_many_version_tree_written_by_tensorstore_reads_the_same(tmp_path):
    """Orbax's trees are one leaf; tiny nodes force interior levels, small inline limits out-of-line values."""
    import tensorstore as ts

    kv = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{tmp_path}/",
                          "config": {"max_decoded_node_bytes": 512, "max_inline_value_bytes": 16}}).result()
    rng = np.random.default_rng(0)
    want = {}
    for _generation in range(3):  # three versions: the newest must be read
        with ts.Transaction() as txn:
            for _ in range(200):
                key = f"k{rng.integers(0, 10 ** 6):07d}/{'x' * int(rng.integers(0, 30))}".encode()
                want[key] = rng.bytes(int(rng.integers(0, 60)))
                kv.with_transaction(txn)[key] = want[key]
    db = OcdbtReader(tmp_path)
    assert db.height >= 2
    assert {key: db.value(key) for key in db.keys()} == want


def test_chunks_larger_than_their_array_are_refused_before_tensorstore_sees_them(layouts, tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(layouts / "plain-f32", folder)
    zarray = folder / "params.Dense_1.bias" / ".zarray"
    zarray.write_text(zarray.read_text().replace('"chunks":[10]', '"chunks":[1099511627776]'))
    assert "params.Dense_1.bias" in _refused_as_corrupt(folder).message  # tensorstore would abort the process on it


def test_without_libzstd_tensorstore_reads_the_same(layouts, monkeypatch):
    from writer.readers import zstd_lib

    monkeypatch.setattr(zstd_lib, "available", lambda: False)
    assert open_direct(layouts / "ocdbt-f32", "zarr", True, ["params.Dense_0.kernel"]) is None
    ck = read_orbax(layouts / "ocdbt-f32")
    monkeypatch.undo()
    want = read_orbax(layouts / "ocdbt-f32")
    for path, ref in want.tensors.items():
        assert ref.load().tobytes() == ck.tensors[path].load().tobytes()


# ---------------------------------------------------------------- chunks read and decoded in pieces


@pytest.mark.parametrize("damage", ["none", "truncated", "flipped"])
def test_a_chunk_read_in_pieces_ends_like_a_whole_read(layouts, tmp_path, monkeypatch, damage):
    # slices() decodes a chunk piece by piece (zstd_lib.decompress_pieces); a whole read decodes it at
    # once. Intact or damaged, both must give the same bytes or the same coded error.
    from writer.readers import orbax_direct

    streamed = []
    real = orbax_direct.stream_flat

    def counted(*args):
        streamed.append(args)
        yield from real(*args)

    monkeypatch.setattr(orbax_direct, "stream_flat", counted)
    folder = tmp_path / "ck"
    shutil.copytree(layouts / "plain-f32", folder)
    chunk = folder / "params.Dense_0.kernel" / "0.0"
    data = bytearray(chunk.read_bytes())
    assert data[:4] == b"\x28\xb5\x2f\xfd"  # zstd
    if damage == "truncated":
        data = data[:len(data) // 2]
    elif damage == "flipped":
        data[-6] ^= 0xFF
    chunk.write_bytes(bytes(data))
    ref = read_orbax(folder).tensors[("params", "Dense_0", "kernel")]

    def outcome(read):
        try:
            return read()
        except ConversionError as exc:
            return exc.code

    whole = outcome(lambda: ref.load().tobytes())
    pieces = outcome(lambda: np.concatenate(list(ref.slices(64))).tobytes())
    assert streamed and pieces == whole
    if damage == "truncated":
        assert whole == "CORRUPT_CHECKPOINT"


def test_decompress_pieces_refuses_frames_of_another_size_and_damage():
    import io

    from writer.readers import zstd_lib

    frame = bytes.fromhex("28b52ffd0458290000616161616168414513")  # `zstd` of b"aaaaa", with checksum
    assert [bytes(p) for p in zstd_lib.decompress_pieces(io.BytesIO(frame).read, 5, 3)] == [b"aaa", b"aa"]
    for data, size, message in [(frame, 4, "expected"), (frame, 6, "expected"), (frame[:-3], 5, "truncated"),
                                 (frame + b"x", 5, "follow"), (frame[:-1] + b"\x00", 5, "damaged")]:
        with pytest.raises(zstd_lib.ZstdError, match=message):
            list(zstd_lib.decompress_pieces(io.BytesIO(data).read, size, 2))
