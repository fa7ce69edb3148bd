"""Docs stay true: the README's commands exist (codes and docs/troubleshooting.md: tests/test_codes.py)."""
from __future__ import annotations

from tests.conftest import ROOT

def test_readme_commands_exist():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/setup.sh && python -m writer examples/mnist_ckpt out/" in readme
    assert "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
