"""The Orbax reader against checkpoints written by orbax 0.12 itself (and flax)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import linen as nn
from flax.training import checkpoints, train_state

from topology.vocabulary.errors import ConversionError
from writer.readers import read_checkpoint
from writer.readers.orbax import read_orbax


class SmallCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        return nn.Dense(10)(x)


@pytest.fixture(scope="module")
def variables():
    return SmallCNN().init(jax.random.PRNGKey(0), jnp.ones((1, 8, 8, 1)))


def _save(path: Path, tree) -> Path:
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree)
    return path


def _key_str(key) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    raise AssertionError(f"unexpected key {key!r}")


def _array_leaves(tree) -> dict[tuple[str, ...], np.ndarray]:
    """Array leaves by path, in jax flattening order (the order orbax records)."""
    leaves = {}
    for keypath, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, (np.ndarray, jax.Array)):
            leaves[tuple(_key_str(k) for k in keypath)] = np.asarray(leaf)
    return leaves


def _assert_same(checkpoint, tree) -> None:
    expected = _array_leaves(tree)
    assert list(checkpoint.tensors) == list(expected)
    for path, want in expected.items():
        ref = checkpoint.tensors[path]
        assert ref.shape == want.shape and ref.dtype == want.dtype, path
        got = ref.load()
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def _code(excinfo) -> str:
    return excinfo.value.code


# ---------------------------------------------------------------- item folders


def test_standard_checkpointer_params(tmp_path, variables):
    ck = read_orbax(_save(tmp_path / "ck", variables["params"]), None)
    assert ck.format == "orbax" and ck.path == tmp_path / "ck" and ck.step is None
    _assert_same(ck, variables["params"])
    assert ("Conv_0", "kernel") in ck.tensors


def test_variables_with_batch_stats_through_dispatcher(tmp_path, variables):
    ck = read_checkpoint(_save(tmp_path / "vars", variables))
    assert ck.format == "orbax"
    _assert_same(ck, variables)
    assert ("batch_stats", "BatchNorm_0", "mean") in ck.tensors
    assert ("params", "Dense_0", "kernel") in ck.tensors


def test_train_state_with_adam(tmp_path, variables):
    state = train_state.TrainState.create(
        apply_fn=SmallCNN().apply, params=variables["params"], tx=optax.adam(1e-3)
    ).replace(step=7)
    grads = jax.tree.map(jnp.ones_like, state.params)
    state = state.apply_gradients(grads=grads).replace(step=7)  # non-zero mu/nu
    ck = read_orbax(_save(tmp_path / "ts", state), None)
    _assert_same(ck, state)
    assert ck.scalars == {("step",): 7} and isinstance(ck.scalars[("step",)], int)
    assert ("opt_state", "0", "mu", "Conv_0", "kernel") in ck.tensors
    assert ck.tensors[("opt_state", "0", "count")].shape == ()


def test_order_follows_jax_flattening_not_insertion(tmp_path):
    # Flax names Dense_0 .. Dense_11 in call order; orbax stores jax's sorted order.
    tree = {f"Dense_{i}": {"kernel": np.full((2, 2), i, np.float32)} for i in range(12)}
    ck = read_orbax(_save(tmp_path / "ck", tree), None)
    expected = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert list(ck.tensors) == [tuple(_key_str(k) for k in p) for p in expected]
    assert list(ck.tensors) != [(f"Dense_{i}", "kernel") for i in range(12)]


def test_dtypes_and_python_scalars(tmp_path):
    rng = np.random.default_rng(0)
    tree = {
        "bf16": rng.normal(size=(3, 5)).astype(ml_dtypes.bfloat16),
        "f16": rng.normal(size=(4,)).astype(np.float16),
        "i32": rng.integers(-9, 9, size=(2, 3)).astype(np.int32),
        "i64": rng.integers(-2**40, 2**40, size=(5,)).astype(np.int64),
        "mask": np.array([True, False, True]),
        "u8": np.arange(6, dtype=np.uint8),
        "zero_d": np.array(0.25, np.float32),
        "lr": 0.125,
        "epoch": 3,
    }
    ck = read_orbax(_save(tmp_path / "ck", tree), None)
    assert ck.tensors[("bf16",)].dtype == np.dtype(ml_dtypes.bfloat16)
    _assert_same(ck, tree)
    assert ck.scalars == {("lr",): 0.125, ("epoch",): 3}


def test_pytree_checkpointer_keeps_strings_as_scalars(tmp_path):
    tree = {"w": np.arange(4, dtype=np.float32), "name": "mnist", "nothing": None, "step": 2}
    ocp.PyTreeCheckpointer().save(tmp_path / "ck", tree)
    ck = read_orbax(tmp_path / "ck", None)
    _assert_same(ck, tree)
    assert ck.scalars == {("name",): "mnist", ("step",): 2}


@pytest.mark.parametrize("use_ocdbt,use_zarr3", [(False, False), (True, True), (False, True)])
def test_other_storage_layouts(tmp_path, variables, use_ocdbt, use_zarr3):
    handler = ocp.PyTreeCheckpointHandler(use_ocdbt=use_ocdbt, use_zarr3=use_zarr3)
    ocp.Checkpointer(handler).save(tmp_path / "ck", args=ocp.args.PyTreeSave(variables))
    assert (tmp_path / "ck" / "manifest.ocdbt").exists() == use_ocdbt
    ck = read_orbax(tmp_path / "ck", None)
    _assert_same(ck, variables)


# ---------------------------------------------------------------- managers


@pytest.fixture()
def manager_dir(tmp_path, variables):
    root = tmp_path / "run"
    with ocp.CheckpointManager(root) as manager:
        for step in (1, 2, 3):
            scaled = jax.tree.map(lambda a, s=step: a * s, variables)
            manager.save(step, args=ocp.args.StandardSave(scaled))
    return root


def test_manager_newest_step(manager_dir, variables):
    ck = read_checkpoint(manager_dir)
    assert ck.step == 3 and ck.path == manager_dir / "3" / "default"
    _assert_same(ck, jax.tree.map(lambda a: a * 3, variables))


def test_manager_chosen_step_and_step_folder(manager_dir, variables):
    ck = read_orbax(manager_dir, 2)
    assert ck.step == 2
    _assert_same(ck, jax.tree.map(lambda a: a * 2, variables))
    direct = read_orbax(manager_dir / "1", None)  # a step folder
    assert direct.step == 1 and direct.path == manager_dir / "1" / "default"
    _assert_same(direct, jax.tree.map(lambda a: a * 1, variables))


def test_manager_missing_step_lists_steps(manager_dir):
    with pytest.raises(ConversionError) as err:
        read_checkpoint(manager_dir, step=9)
    assert _code(err) == "STEP_NOT_FOUND"
    assert "1, 2, 3" in err.value.message and str(manager_dir) in err.value.message


def test_manager_ignores_unfinished_step(manager_dir, variables):
    shutil.copytree(manager_dir / "3", manager_dir / "4.orbax-checkpoint-tmp-1712")
    ck = read_orbax(manager_dir, None)
    assert ck.step == 3
    with pytest.raises(ConversionError) as err:
        read_orbax(manager_dir, 4)
    assert _code(err) == "INCOMPLETE_CHECKPOINT" and "4" in err.value.message


def test_step_asked_of_a_single_checkpoint(manager_dir):
    with pytest.raises(ConversionError) as err:
        read_orbax(manager_dir / "2", 3)
    assert _code(err) == "STEP_NOT_FOUND"


def _composite(root: Path, step: int, **items) -> None:
    with ocp.CheckpointManager(root) as manager:
        args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
        manager.save(step, args=ocp.args.Composite(**args))


def test_composite_prefers_params(tmp_path, variables):
    _composite(tmp_path / "run", 5, params=variables["params"], extra=variables["batch_stats"])
    ck = read_checkpoint(tmp_path / "run")
    assert ck.step == 5 and ck.path.name == "params"
    _assert_same(ck, variables["params"])


def test_composite_single_named_item(tmp_path, variables):
    _composite(tmp_path / "run", 4, state=variables)
    ck = read_orbax(tmp_path / "run", None)
    assert ck.step == 4 and ck.path.name == "state"
    _assert_same(ck, variables)


def test_composite_ambiguous_items(tmp_path, variables):
    _composite(tmp_path / "run", 6, encoder=variables["params"], decoder=variables["batch_stats"])
    with pytest.raises(ConversionError) as err:
        read_orbax(tmp_path / "run", None)
    assert _code(err) == "AMBIGUOUS_CHECKPOINT_ITEM"
    assert "decoder, encoder" in err.value.message
    # the hint's way out: pass the item folder
    ck = read_orbax(tmp_path / "run" / "6" / "decoder", None)
    _assert_same(ck, variables["batch_stats"])


def test_flax_save_checkpoint_legacy_folders(tmp_path, variables):
    state = train_state.TrainState.create(
        apply_fn=SmallCNN().apply, params=variables["params"], tx=optax.sgd(0.1)
    )
    checkpoints.save_checkpoint(tmp_path, state.replace(step=10), step=10, keep=3)
    later = state.replace(step=20, params=jax.tree.map(lambda a: a + 1, state.params))
    checkpoints.save_checkpoint(tmp_path, later, step=20, keep=3)
    ck = read_checkpoint(tmp_path)
    assert ck.step == 20 and ck.path == tmp_path / "checkpoint_20"
    assert ck.scalars[("step",)] == 20
    _assert_same(ck, later)
    older = read_checkpoint(tmp_path, step=10)
    assert older.step == 10
    _assert_same(older, state.replace(step=10))


# ---------------------------------------------------------------- damage


def _big_checkpoint(path: Path) -> Path:
    rng = np.random.default_rng(1)  # random values: zstd cannot shrink them away
    return _save(path, {"params": {"Dense_0": {"kernel": rng.normal(size=(256, 256)).astype(
        np.float32), "bias": np.zeros(256, np.float32)}}})


def _largest_file(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_deleted_data_file(tmp_path):
    folder = _big_checkpoint(tmp_path / "ck")
    _largest_file(folder).unlink()
    with pytest.raises(ConversionError) as err:
        read_orbax(folder, None).tensors[("params", "Dense_0", "kernel")].load()
    assert _code(err) == "CORRUPT_CHECKPOINT"
    assert "params/Dense_0/kernel" in err.value.message


def test_truncated_data_file_is_found_on_load_only(tmp_path):
    folder = _big_checkpoint(tmp_path / "ck")
    victim = _largest_file(folder)
    victim.write_bytes(victim.read_bytes()[:1000])
    ck = read_orbax(folder, None)  # listing reads no data, so it still works
    np.testing.assert_array_equal(ck.tensors[("params", "Dense_0", "bias")].load(), 0)
    with pytest.raises(ConversionError) as err:
        ck.tensors[("params", "Dense_0", "kernel")].load()
    assert _code(err) == "CORRUPT_CHECKPOINT" and "params/Dense_0/kernel" in err.value.message


def test_deleted_chunk_without_ocdbt(tmp_path, variables):
    handler = ocp.PyTreeCheckpointHandler(use_ocdbt=False)
    ocp.Checkpointer(handler).save(tmp_path / "ck", args=ocp.args.PyTreeSave(variables))
    (tmp_path / "ck" / "params.Dense_0.kernel" / "0.0").unlink()
    ck = read_orbax(tmp_path / "ck", None)
    with pytest.raises(ConversionError) as err:
        ck.tensors[("params", "Dense_0", "kernel")].load()
    assert _code(err) == "CORRUPT_CHECKPOINT" and "params/Dense_0/kernel" in err.value.message
    shutil.rmtree(tmp_path / "ck" / "params.Conv_0.kernel")  # metadata gone too
    with pytest.raises(ConversionError) as err:
        read_orbax(tmp_path / "ck", None)
    assert _code(err) == "CORRUPT_CHECKPOINT" and "params/Conv_0/kernel" in err.value.message


@pytest.mark.parametrize("damage", ["delete", "garbage", "no_table"])
def test_bad_metadata(tmp_path, variables, damage):
    folder = _save(tmp_path / "ck", variables)
    meta = folder / "_METADATA"
    if damage == "delete":
        meta.unlink()
    elif damage == "garbage":
        meta.write_bytes(b"\x00\xffnot json")
    else:
        meta.write_text(json.dumps({"use_ocdbt": True}))
    with pytest.raises(ConversionError) as err:
        read_checkpoint(folder)
    assert _code(err) == "CORRUPT_CHECKPOINT" and str(folder) in err.value.message


def test_missing_ocdbt_manifest(tmp_path, variables):
    folder = _save(tmp_path / "ck", variables)
    (folder / "manifest.ocdbt").unlink()
    with pytest.raises(ConversionError) as err:
        read_orbax(folder, None)
    assert _code(err) == "CORRUPT_CHECKPOINT" and "manifest.ocdbt" in err.value.message


def test_folder_of_random_files(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(50)))
    (folder / "notes.txt").write_text("hello")
    (folder / "sub").mkdir()
    (folder / "sub" / "x.bin").write_bytes(np.random.default_rng(0).bytes(64))
    with pytest.raises(ConversionError) as err:
        read_checkpoint(folder)
    assert _code(err) == "NOT_A_CHECKPOINT"
    assert str(folder) in err.value.message and "_METADATA" in err.value.message


def test_only_unfinished_saves(tmp_path, variables):
    folder = _save(tmp_path / "ck", variables)
    folder.rename(tmp_path / "ck.orbax-checkpoint-tmp-99")
    for path in (tmp_path, tmp_path / "ck.orbax-checkpoint-tmp-99"):
        with pytest.raises(ConversionError) as err:
            read_checkpoint(path)
        assert _code(err) == "INCOMPLETE_CHECKPOINT"


def test_manager_with_only_unfinished_steps(manager_dir):
    for step in ("1", "2", "3"):
        (manager_dir / step).rename(manager_dir / f"{step}.orbax-checkpoint-tmp-5")
    with pytest.raises(ConversionError) as err:
        read_checkpoint(manager_dir)
    assert _code(err) == "INCOMPLETE_CHECKPOINT" and "1, 2, 3" in err.value.message


def test_step_folder_without_items(manager_dir):
    shutil.rmtree(manager_dir / "3" / "default")
    with pytest.raises(ConversionError) as err:
        read_orbax(manager_dir / "3", None)
    assert _code(err) == "CORRUPT_CHECKPOINT"


def test_old_orbax_layout_is_named(tmp_path):
    # Orbax < 0.5 wrote a msgpack 'checkpoint' file plus one zarr folder per array.
    import tensorstore as ts

    folder = tmp_path / "old"
    store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(folder / "w")}},
                    create=True, dtype=ts.float32, shape=[3]).result()
    store.write(np.ones(3, np.float32)).result()
    (folder / "checkpoint").write_bytes(b"\x81\xa1w\xb3PLACEHOLDER://w")
    with pytest.raises(ConversionError) as err:
        read_orbax(folder, None)
    assert _code(err) == "UNSUPPORTED_ORBAX_VERSION"


def test_only_scalars_is_empty(tmp_path):
    with pytest.raises(ConversionError) as err:
        read_orbax(_save(tmp_path / "ck", {"step": 3, "lr": 0.1}), None)
    assert _code(err) == "EMPTY_CHECKPOINT"


# ---------------------------------------------------------------- cost


def test_listing_is_fast_and_reads_no_data(tmp_path):
    tree = {f"layer_{i:02d}": np.full((256, 1024), i, np.float32) for i in range(16)}
    folder = _save(tmp_path / "ck", tree)
    start = time.perf_counter()
    ck = read_orbax(folder, None)
    elapsed = time.perf_counter() - start
    assert len(ck.tensors) == 16 and elapsed < 1.0
    np.testing.assert_array_equal(ck.tensors[("layer_07",)].load(), tree["layer_07"])
    ck.close()  # handles dropped; a later load reopens
    np.testing.assert_array_equal(ck.tensors[("layer_15",)].load(), tree["layer_15"])


def test_reader_module_does_not_import_jax(tmp_path):
    code = ("import sys, writer.readers.orbax, writer.readers; "
            "assert 'jax' not in sys.modules and 'orbax' not in sys.modules, sorted(sys.modules)")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
