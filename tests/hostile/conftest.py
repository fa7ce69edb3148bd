"""Fixtures of the hostile suite: one real Orbax checkpoint per session, and the code under test.

``FLAX2TFJS_HOSTILE_CODE=/path/to/old/checkout pytest tests/hostile`` runs the suite against another
checkout (to show that each test fails on the old code).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.hostile import builders
from tests.hostile.peak import ROOT

CODE = Path(os.environ.get("FLAX2TFJS_HOSTILE_CODE", ROOT))


@pytest.fixture(scope="session")
def orbax_base(tmp_path_factory) -> Path:
    return builders.orbax_zarr(tmp_path_factory.mktemp("orbax") / "base")


@pytest.fixture(scope="session")
def earlier_conversion(tmp_path_factory) -> Path:
    """A real earlier conversion of the msgpack MLP (what --force may replace)."""
    from tests.hostile.peak import writer_cli

    folder = tmp_path_factory.mktemp("earlier")
    ckpt = builders.mlp_msgpack(folder / "mlp.msgpack")
    result = writer_cli(ckpt, folder / "out", "--quiet", code_root=ROOT)
    assert result.returncode == 0, result.stderr
    return folder / "out"
