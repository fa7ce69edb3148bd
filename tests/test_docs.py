"""Docs stay true: every error/notice code used in the code base is documented."""
from __future__ import annotations

import re

from tests.conftest import ROOT

_CODE_USE = re.compile(
    r"""(?:(?:ConversionError|VerificationFailed|Misfit)\(\s*|\.(?:warn|fixed|assume)\(\s*|error\[)["']?([A-Z][A-Z0-9_]{2,})["'\]]"""
)


def _codes_in_code() -> set[str]:
    codes = set()
    for folder in ("writer", "topology", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            codes |= set(_CODE_USE.findall(path.read_text(encoding="utf-8")))
    codes |= set(_CODE_USE.findall((ROOT / "flax2tfjs.py").read_text(encoding="utf-8")))  # the launcher
    return codes - {"CODE"}  # the placeholder in docstrings


def test_every_code_is_in_troubleshooting():
    documented = set(re.findall(r"^### `([A-Z0-9_]+)`", (ROOT / "docs" / "troubleshooting.md").read_text(), re.M))
    used = _codes_in_code()
    assert len(used) > 20  # the scan itself works
    missing = sorted(used - documented)
    assert not missing, f"codes used but not in docs/troubleshooting.md: {missing}"
    unused = sorted(documented - used)
    assert not unused, f"codes documented but never used: {unused}"


def test_readme_commands_exist():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/setup.sh && python -m writer examples/mnist_ckpt out/" in readme
    assert "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
