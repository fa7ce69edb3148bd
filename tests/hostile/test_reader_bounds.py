"""Reader bounds and what --force may replace, as unit tests (the CLI-level cases are in tests/hostile/)."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from tests.hostile import builders
from topology.vocabulary.errors import ConversionError
from writer.readers import read_checkpoint
from writer.readers.bounds import FREE_BYTES, MAX_INFLATION, check_claim
from writer.commands.export.savedmodel import savedmodel_foreign_entry


def test_fortran_ordered_npz_members_still_load(tmp_path):
    w = np.arange(24, dtype="float32").reshape(2, 3, 4)
    path = tmp_path / "f.npz"
    np.savez_compressed(path, **{"params/Dense_0/kernel": np.asfortranarray(w)})
    with read_checkpoint(path) as checkpoint:
        assert np.array_equal(checkpoint.tensors[("params", "Dense_0", "kernel")].load(), w)


def test_the_inflation_rule():
    check_claim("w", (FREE_BYTES // 4,), 4, 0)  # small claims are always tried
    at_ratio = -(-4 * FREE_BYTES // MAX_INFLATION)
    check_claim("w", (FREE_BYTES,), 4, at_ratio)  # at the ratio
    with pytest.raises(ConversionError, match="claims shape"):
        check_claim("w", (FREE_BYTES,), 4, at_ratio - 1)
    with pytest.raises(ConversionError):
        check_claim("w", (2 ** 64, 1), 4, 2 ** 70)  # beyond numpy, however much is stored


def test_a_fifo_chunk_in_an_orbax_folder_is_refused(tmp_path, orbax_base):
    ckpt = tmp_path / "ck"
    shutil.copytree(orbax_base, ckpt)
    chunk = next(p for p in (ckpt / "params.Dense_0.kernel").iterdir() if not p.name.startswith("."))
    chunk.unlink()
    os.mkfifo(chunk)
    with read_checkpoint(ckpt) as checkpoint, pytest.raises(ConversionError) as err:
        checkpoint.tensors[("params", "Dense_0", "kernel")].load()
    assert err.value.code == "NOT_A_REGULAR_FILE"


def test_savedmodel_force_replaces_only_a_savedmodel(tmp_path):
    folder = tmp_path / "saved"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"x")
    (folder / "variables" / "variables.index").write_bytes(b"x")
    assert savedmodel_foreign_entry(folder) is None
    (folder / "notes.txt").write_text("mine")
    assert savedmodel_foreign_entry(folder).name == "notes.txt"
