"""The streaming Flax msgpack reader, checked against flax.serialization.msgpack_restore."""
from __future__ import annotations

import random
import struct
import time
import tracemalloc
from pathlib import Path

import flax
import flax.serialization as fser
import jax.numpy as jnp
import ml_dtypes
import msgpack
import numpy as np
import pytest
from flax.training import checkpoints

from tests.flax_models import CNN, MLP, init, train_state_of
from topology.vocabulary.errors import ConversionError
from writer.readers import read_checkpoint
from writer.readers.flax_msgpack import MAX_DEPTH, read_flax_msgpack

MIB = 1 << 20


# -- helpers ---------------------------------------------------------------


def flatten_restored(tree, prefix=()) -> dict:
    """msgpack_restore's tree as {path: leaf} in file order; lists count as '0', '1', ..."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    out = {}
    for key, value in items:
        path = prefix + (str(key),)
        if isinstance(value, (dict, list)):
            out.update(flatten_restored(value, path))
        else:
            out[path] = value
    return out


def assert_matches_flax(ck, data: bytes) -> None:
    """Every leaf of ``ck`` equals what flax.serialization.msgpack_restore gives, in the same order."""
    expected = flatten_restored(fser.msgpack_restore(data))
    arrays = [p for p, v in expected.items() if isinstance(v, np.ndarray)]
    assert list(ck.tensors) == arrays
    for path in arrays:
        want, ref = expected[path], ck.tensors[path]
        if want.dtype == ml_dtypes.bfloat16:  # read without ml_dtypes: widened to float32, exactly
            assert ref.stored_dtype == "bfloat16" and ref.dtype_name == "bfloat16", path
            want = want.astype(np.float32)
        assert ref.shape == want.shape and ref.dtype == want.dtype, path
        got = ref.load()
        assert got.shape == want.shape and got.dtype == want.dtype, path
        assert got.tobytes() == want.tobytes(), path
    others = {p: v for p, v in expected.items() if p not in ck.tensors}
    assert set(ck.scalars) == set(others)
    for path, want in others.items():
        want = want.item() if isinstance(want, np.generic) else want
        assert ck.scalars[path] == want and type(ck.scalars[path]) is type(want), path


def write(tmp_path: Path, data: bytes, name: str = "ck.msgpack") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_error(path: Path) -> ConversionError:
    with pytest.raises(ConversionError) as info:
        read_flax_msgpack(path)
    return info.value


def array_ext_header(shape, dtype_name: str, nbytes: int) -> bytes:
    """The bytes Flax writes before an array's raw data, with 32-bit lengths."""
    inner = b"\x93" + msgpack.packb(list(shape)) + msgpack.packb(dtype_name) + b"\xc6" + struct.pack(">I", nbytes)
    return b"\xc9" + struct.pack(">I", len(inner) + nbytes) + b"\x01" + inner


def rchar() -> int:
    """Bytes this process has read through read() syscalls so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


# -- real Flax trees ---------------------------------------------------------


@pytest.mark.parametrize(
    "module, shape", [(CNN(), (28, 28, 1)), (MLP((64, 32, 10)), (28, 28, 1))], ids=["cnn", "mlp"]
)
def test_linen_params_match_flax(tmp_path, module, shape):
    variables = init(module, shape)
    data = fser.to_bytes(variables["params"])
    ck = read_flax_msgpack(write(tmp_path, data))
    assert ck.format == "flax-msgpack" and ck.scalars == {}
    assert_matches_flax(ck, data)
    assert set(ck.tensors) == {
        (layer, name) for layer, sub in variables["params"].items() for name in sub
    }


def test_train_state_with_adam_all_leaves_match(tmp_path):
    module = CNN()
    state = train_state_of(module, init(module, (28, 28, 1)))
    data = fser.to_bytes(state)
    ck = read_flax_msgpack(write(tmp_path, data))
    assert_matches_flax(ck, data)
    assert ck.scalars[("step",)] == int(state.step)
    mu = ck.tensors[("opt_state", "0", "mu", "Dense_0", "kernel")].load()
    np.testing.assert_array_equal(mu, np.asarray(state.opt_state[0].mu["Dense_0"]["kernel"]))
    assert not np.array_equal(mu, ck.tensors[("params", "Dense_0", "kernel")].load())


def test_frozen_dict(tmp_path):
    variables = init(MLP(), (6,))
    data = fser.to_bytes(flax.core.freeze(variables))
    ck = read_flax_msgpack(write(tmp_path, data))
    assert_matches_flax(ck, data)
    assert ("params", "Dense_1", "kernel") in ck.tensors


def test_dtypes_match_flax(tmp_path):
    rng = np.random.RandomState(0)
    tree = {
        "bf16": jnp.asarray(rng.randn(3, 4), jnp.bfloat16),
        "f16": rng.randn(5).astype(np.float16),
        "f64": rng.randn(2, 2),
        "i64": rng.randint(-(2**40), 2**40, size=(7,), dtype=np.int64),
        "bool": rng.rand(2, 3) > 0.5,
        "u8": rng.randint(0, 255, size=(4, 1), dtype=np.uint8),
        "i8": np.array([-128, 0, 127], np.int8),
        "c64": (rng.randn(3) + 1j * rng.randn(3)).astype(np.complex64),
    }
    data = fser.to_bytes(tree)
    ck = read_flax_msgpack(write(tmp_path, data))
    assert_matches_flax(ck, data)
    assert ck.tensors[("bf16",)].dtype == np.float32 and ck.tensors[("bf16",)].stored_dtype == "bfloat16"


def test_bfloat16_widening_is_exact_for_every_bit_pattern(tmp_path):
    # All 65,536 bfloat16 values (NaNs, infinities, subnormals included): the bit shift must
    # give what ml_dtypes' own cast gives, bit for bit.
    bits = np.arange(1 << 16, dtype=np.uint16)
    values = bits.view(ml_dtypes.bfloat16)
    ck = read_flax_msgpack(write(tmp_path, fser.to_bytes({"w": values})))
    ref = ck.tensors[("w",)]
    want = values.astype(np.float32).view(np.uint32)
    assert ref.load().view(np.uint32).tolist() == want.tolist()
    streamed = np.concatenate(list(ref.slices(4096)))
    assert streamed.view(np.uint32).tolist() == want.tolist()


def test_other_ml_dtypes(tmp_path):
    # flax.serialization cannot restore these names itself; compare with the arrays saved.
    tree = {
        "e4m3": np.linspace(-2, 2, 6).astype(ml_dtypes.float8_e4m3fn),
        "int4": np.array([-8, -1, 0, 7], ml_dtypes.int4),
    }
    ck = read_flax_msgpack(write(tmp_path, fser.to_bytes(tree)))
    for key, want in tree.items():
        got = ck.tensors[(key,)].load()
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_zero_d_and_zero_size_arrays(tmp_path):
    tree = {
        "scalar": np.array(3.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "empty3": np.zeros((2, 0, 4), np.int32),
        "bf16_0d": np.array(1.25, ml_dtypes.bfloat16),
    }
    data = fser.to_bytes(tree)
    ck = read_flax_msgpack(write(tmp_path, data))
    assert_matches_flax(ck, data)
    assert ck.tensors[("scalar",)].shape == () and ck.tensors[("empty3",)].load().shape == (2, 0, 4)


def test_non_array_leaves_become_python_scalars(tmp_path):
    tree = {
        "params": {"w": np.ones(2, np.float32)},
        "lr": np.float32(0.1),  # numpy scalar: ext 3
        "b16": ml_dtypes.bfloat16(1.5),
        "count": np.int64(-7),
        "c": 1 + 2j,  # native complex: ext 2
        "name": "adam",
        "none": None,
        "flag": True,
        "n": -5,
        "big": 2**63 + 5,
        "x": 2.5,
        "raw": b"\x00\x01",
    }
    data = fser.to_bytes(tree)
    ck = read_flax_msgpack(write(tmp_path, data))
    assert_matches_flax(ck, data)
    assert list(ck.tensors) == [("params", "w")]
    assert type(ck.scalars[("lr",)]) is float and ck.scalars[("lr",)] == float(np.float32(0.1))
    assert ck.scalars[("c",)] == 1 + 2j and ck.scalars[("b16",)] == 1.5


def test_lists_and_integer_keys_become_string_keys(tmp_path):
    tree = {"layers": [np.arange(2.0), {"w": np.ones(3)}], "by_id": {7: np.zeros(1), 3: np.ones(1)}}
    data = fser.msgpack_serialize(tree, in_place=True)
    ck = read_flax_msgpack(write(tmp_path, data))
    assert_matches_flax(ck, data)
    assert list(ck.tensors) == [("layers", "0"), ("layers", "1", "w"), ("by_id", "7"), ("by_id", "3")]


def test_file_order_is_kept(tmp_path):
    names = ["zeta", "alpha", "mid", "Beta", "a0"]
    tree = {"params": {name: np.full(2, i, np.float32) for i, name in enumerate(names)}}
    ck = read_flax_msgpack(write(tmp_path, fser.to_bytes(tree)))
    assert [path[1] for path in ck.tensors] == names
    assert [float(ref.load()[0]) for ref in ck.tensors.values()] == list(range(len(names)))


# -- chunked arrays -----------------------------------------------------------


def test_chunked_arrays_become_one_tensor(tmp_path, monkeypatch):
    monkeypatch.setattr(fser, "MAX_CHUNK_SIZE", 64)
    rng = np.random.RandomState(3)
    tree = {
        "params": {
            "emb": rng.randn(10, 10).astype(np.float32),  # 400 bytes -> 7 chunks of 16
            "small": np.ones(3, np.float32),  # 12 bytes: not chunked
            "bf": jnp.asarray(rng.randn(3, 5, 7), jnp.bfloat16),
        },
        "step": 4,
    }
    data = fser.to_bytes(tree)
    raw = msgpack.unpackb(data, strict_map_key=False)
    assert raw["params"]["emb"]["__msgpack_chunked_array__"] is True
    assert len(raw["params"]["emb"]["chunks"]) == 7
    ck = read_flax_msgpack(write(tmp_path, data))
    assert_matches_flax(ck, data)
    assert list(ck.tensors) == [("params", "emb"), ("params", "small"), ("params", "bf")]
    assert ck.scalars == {("step",): 4}


def test_chunked_array_at_top_level(tmp_path, monkeypatch):
    monkeypatch.setattr(fser, "MAX_CHUNK_SIZE", 40)
    array = np.arange(50, dtype=np.float32).reshape(5, 10)
    data = fser.msgpack_serialize(array)
    ck = read_flax_msgpack(write(tmp_path, data))
    assert list(ck.tensors) == [()]
    np.testing.assert_array_equal(ck.tensors[()].load(), fser.msgpack_restore(data))


def test_damaged_chunked_array_is_corrupt(tmp_path):
    chunk = msgpack.ExtType(1, fser._ndarray_to_bytes(np.ones(4, np.float32)))
    bad = {
        "params": {
            "emb": {"__msgpack_chunked_array__": True, "shape": {"0": 3, "1": 3}, "chunks": {"0": chunk}}
        }
    }
    error = read_error(write(tmp_path, msgpack.packb(bad)))
    assert error.code == "CORRUPT_CHECKPOINT" and "params/emb" in error.message


# -- bounded memory and time ---------------------------------------------------


def test_loading_reads_only_that_tensors_bytes(tmp_path):
    rng = np.random.RandomState(1)
    tree = {"params": {"big": np.zeros(8 * MIB // 4, np.float32), "small": rng.randn(5, 3).astype(np.float32)}}
    path = write(tmp_path, fser.to_bytes(tree))
    before = rchar()
    ck = read_flax_msgpack(path)
    walked = rchar() - before
    assert walked < 256 * 1024, f"the walk read {walked} bytes"
    before = rchar()
    small = ck.tensors[("params", "small")].load()
    assert rchar() - before < 64 * 1024
    np.testing.assert_array_equal(small, tree["params"]["small"])
    before = rchar()
    ck.tensors[("params", "big")].load()
    assert rchar() - before >= 8 * MIB  # the measure itself works


def test_walking_a_1gb_file_takes_well_under_a_second(tmp_path):
    # A sparse file: 50 tensors of 20 MiB whose data are holes, so the test costs no disk.
    path = tmp_path / "big.msgpack"
    nbytes = 20 * MIB
    with open(path, "wb") as handle:
        handle.write(b"\x81" + msgpack.packb("params") + b"\xde" + struct.pack(">H", 50))
        for i in range(50):
            handle.write(msgpack.packb(f"Dense_{i}") + array_ext_header((1024, 5120), "float32", nbytes))
            handle.seek(nbytes, 1)
        handle.truncate()
    assert path.stat().st_size > 1_000_000_000
    before_io, start = rchar(), time.perf_counter()
    ck = read_flax_msgpack(path)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.3, f"walk took {elapsed:.3f}s"
    assert rchar() - before_io < 8 * MIB
    assert len(ck.tensors) == 50 and list(ck.tensors)[7] == ("params", "Dense_7")
    assert ck.tensors[("params", "Dense_49")].shape == (1024, 5120)


def test_hand_built_header_matches_flax(tmp_path):
    # Guards the helper the 1 GB and forged-header tests rely on.
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = b"\x81\xa1w" + array_ext_header(array.shape, "float32", array.nbytes) + array.tobytes()
    np.testing.assert_array_equal(fser.msgpack_restore(data)["w"], array)
    np.testing.assert_array_equal(read_flax_msgpack(write(tmp_path, data)).tensors[("w",)].load(), array)


FORGED = {
    # a bin leaf claiming 4 GiB in a tiny file
    "bin32": b"\x81\xa1x\xc6\xff\xff\xff\xff" + b"abc",
    # an ext claiming 4 GiB
    "ext32": b"\x81\xa1x\xc9\xff\xff\xff\xff\x01" + b"\x93\x91\x01",
    # an array whose shape claims 2**40 float32 elements
    "shape": b"\x81\xa1x" + array_ext_header((2**20, 2**20), "float32", 2**32 - 64),
    # an array whose header claims 2**40 elements of data that are not there
    "shape_ok_len": b"\x81\xa1x" + array_ext_header((2**40,), "uint8", 0)[:-4] + b"\xff\xff\xff\xff",
    # a map claiming 4 billion entries
    "map32": b"\x81\xa1x\xdf\xff\xff\xff\xff\xa1a\x01",
    "array32": b"\x81\xa1x\xdd\xff\xff\xff\xff\x01\x02",
    "str32": b"\x81\xa1x\xdb\xff\xff\xff\xf0abc",
    "key32": b"\x81\xdb\xff\xff\xff\xf0abc",
}


@pytest.mark.parametrize("name", sorted(FORGED))
def test_forged_huge_lengths_fail_fast_without_allocating(tmp_path, name):
    path = write(tmp_path, FORGED[name])
    tracemalloc.start()
    start = time.perf_counter()
    try:
        error = read_error(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 0.5
    assert peak < 2 * MIB, f"peak allocation {peak} bytes"
    assert error.code in ("TRUNCATED_CHECKPOINT", "CORRUPT_CHECKPOINT")
    assert str(path) in error.message


def test_truncated_at_every_offset(tmp_path):
    module = MLP((8, 4))
    data = fser.to_bytes(train_state_of(module, init(module, (3,))))
    path = tmp_path / "cut.msgpack"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        error = read_error(path)
        assert error.code == "TRUNCATED_CHECKPOINT", (cut, error.render())
        assert str(path) in error.message and "byte offset" in error.message
        assert f"ends at byte {cut:,}" in error.message
    path.write_bytes(data)
    assert_matches_flax(read_flax_msgpack(path), data)


def test_truncated_inside_tensor_data_names_the_tensor(tmp_path):
    tree = {"params": {"Dense_0": {"kernel": np.ones((16, 16), np.float32), "bias": np.zeros(16, np.float32)}}}
    data = fser.to_bytes(tree)
    cut = data.index(b"kernel") + 200  # inside the 1024 data bytes of the kernel
    error = read_error(write(tmp_path, data[:cut]))
    assert error.code == "TRUNCATED_CHECKPOINT"
    # The ext header (data plus 15 header bytes) already claims more than is left.
    assert "`params/Dense_0/kernel`" in error.message and "needs 1,039 bytes" in error.message
    assert f"ends at byte {cut}" in error.message


def test_file_shrinking_after_the_walk_is_reported_on_load(tmp_path):
    tree = {"params": {"a": np.ones(64, np.float32), "b": np.arange(64, dtype=np.float32)}}
    data = fser.to_bytes(tree)
    path = write(tmp_path, data)
    ck = read_flax_msgpack(path)
    path.write_bytes(data[:-100])
    with pytest.raises(ConversionError) as info:
        ck.tensors[("params", "b")].load()
    assert info.value.code == "TRUNCATED_CHECKPOINT" and "params/b" in info.value.message
    np.testing.assert_array_equal(ck.tensors[("params", "a")].load(), tree["params"]["a"])


def test_random_damage_gives_only_conversion_errors(tmp_path):
    module = MLP((8, 4))
    data = fser.to_bytes(train_state_of(module, init(module, (3,))))
    rng = random.Random(1234)
    path = tmp_path / "fuzz.msgpack"
    codes = set()
    start = time.perf_counter()
    for _ in range(400):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(damaged))
            action = rng.random()
            if action < 0.6:
                damaged[at] = rng.randrange(256)
            elif action < 0.8:
                del damaged[at : at + rng.randint(1, 8)]
            else:
                damaged[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        path.write_bytes(bytes(damaged))
        try:
            ck = read_flax_msgpack(path)
            for ref in ck.tensors.values():
                assert ref.load().shape == ref.shape
            codes.add("ok")
        except ConversionError as error:
            codes.add(error.code)
    assert time.perf_counter() - start < 20
    assert codes <= {"ok", "TRUNCATED_CHECKPOINT", "CORRUPT_CHECKPOINT", "NOT_A_CHECKPOINT", "EMPTY_CHECKPOINT"}
    assert "CORRUPT_CHECKPOINT" in codes


# -- malformed structure ------------------------------------------------------------


def leaf_map(value: bytes, key: bytes = b"\xa1w") -> bytes:
    return b"\x81\xa6params\x81" + key + value


def ndarray_ext(shape, dtype_name, raw: bytes, code: int = 1) -> bytes:
    return msgpack.packb(msgpack.ExtType(code, msgpack.packb((shape, dtype_name, raw))))


def test_deep_nesting_is_corrupt(tmp_path):
    bottom = b"\xa1w" + ndarray_ext([1], "float32", b"\0" * 4)
    ok = b"\x81\xa1k" * (MAX_DEPTH - 1) + b"\x81" + bottom
    ck = read_flax_msgpack(write(tmp_path, ok, "ok.msgpack"))
    assert list(ck.tensors) == [("k",) * (MAX_DEPTH - 1) + ("w",)]

    too_deep = b"\x81\xa1k" * MAX_DEPTH + b"\x81" + bottom
    error = read_error(write(tmp_path, too_deep, "deep.msgpack"))
    assert error.code == "CORRUPT_CHECKPOINT" and str(MAX_DEPTH) in error.message

    start = time.perf_counter()
    lists = b"\x81\xa1k" + b"\x91" * 200_000 + b"\x01"
    error = read_error(write(tmp_path, lists, "lists.msgpack"))
    assert error.code == "CORRUPT_CHECKPOINT" and time.perf_counter() - start < 1


@pytest.mark.parametrize(
    "case, data",
    [
        ("unknown dtype", leaf_map(ndarray_ext([2], "float33", b"\0" * 8))),
        ("object dtype", leaf_map(ndarray_ext([1], "object", b"\0" * 8))),
        ("non-canonical dtype", leaf_map(ndarray_ext([2], "f4", b"\0" * 8))),
        ("size mismatch", leaf_map(ndarray_ext([3], "float32", b"\0" * 8))),
        ("negative dim", leaf_map(ndarray_ext([-2], "float32", b"\0" * 8))),
        ("unknown ext", leaf_map(msgpack.packb(msgpack.ExtType(5, b"abcd")))),
        ("bad ext payload", leaf_map(msgpack.packb(msgpack.ExtType(1, b"\x92\x91\x01")))),
        ("extra payload bytes", leaf_map(msgpack.packb(msgpack.ExtType(1, msgpack.packb(([1], "int8", b"\1")) + b"!")))),
        ("trailing garbage", msgpack.packb({"params": {"w": msgpack.ExtType(1, msgpack.packb(([1], "int8", b"\1")))}}) + b"\x00"),
        ("0xc1", leaf_map(b"\xc1")),
        ("duplicate key", b"\x82\xa1w" + ndarray_ext([1], "int8", b"\1") + b"\xa1w\x01"),
        ("float key", b"\x81\xcb" + struct.pack(">d", 1.5) + ndarray_ext([1], "int8", b"\1")),
        ("bad utf-8 key", b"\x81\xa2\xff\xfe" + ndarray_ext([1], "int8", b"\1")),
    ],
)
def test_malformed_files_are_corrupt(tmp_path, case, data):
    error = read_error(write(tmp_path, data))
    assert error.code == "CORRUPT_CHECKPOINT", (case, error.render())
    assert error.hint and "byte offset" in error.message


def test_non_map_top_level_is_not_a_checkpoint(tmp_path):
    error = read_error(write(tmp_path, msgpack.packb([1, 2, 3])))
    assert error.code == "NOT_A_CHECKPOINT"


def test_map_without_arrays_is_empty(tmp_path):
    error = read_error(write(tmp_path, fser.to_bytes({"step": 3, "opt_state": {}})))
    assert error.code == "EMPTY_CHECKPOINT" and "step" in error.message


# -- through the dispatcher ---------------------------------------------------------------


def test_dispatcher_reads_msgpack_files(tmp_path):
    variables = init(CNN(), (28, 28, 1))
    data = fser.to_bytes(variables)
    ck = read_checkpoint(write(tmp_path, data, "model.msgpack"))
    assert ck.format == "flax-msgpack"
    assert_matches_flax(ck, data)


def test_dispatcher_reads_legacy_checkpoint_folders(tmp_path):
    module = MLP((8, 4))
    trees = {step: init(module, (3,), seed=step) for step in (10, 20)}
    previous = flax.config.flax_use_orbax_checkpointing
    flax.config.update("flax_use_orbax_checkpointing", False)
    try:
        for step, tree in trees.items():
            checkpoints.save_checkpoint(tmp_path.absolute(), tree, step, keep=5)
    finally:
        flax.config.update("flax_use_orbax_checkpointing", previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_10", "checkpoint_20"]

    for step, chosen in ((None, 20), (10, 10)):
        ck = read_checkpoint(tmp_path, step=step)
        assert ck.format == "flax-msgpack" and ck.step == chosen
        assert ck.path.name == f"checkpoint_{chosen}"
        kernel = ck.tensors[("params", "Dense_0", "kernel")].load()
        np.testing.assert_array_equal(kernel, trees[chosen]["params"]["Dense_0"]["kernel"])
    assert not np.array_equal(
        trees[10]["params"]["Dense_0"]["kernel"], trees[20]["params"]["Dense_0"]["kernel"]
    )

    with pytest.raises(ConversionError) as info:
        read_checkpoint(tmp_path, step=7)
    assert info.value.code == "STEP_NOT_FOUND"
