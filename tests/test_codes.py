"""Error and notice codes are declared once (topology/vocabulary/codes.py), raised only when declared, documented.

Three checks hold the registry, the code base and docs/troubleshooting.md in step:
- statically (writer/, topology/, examples/, scripts/, bench/ and the launcher), every code handed to ``ConversionError``/``VerificationFailed``/``Misfit``/``Notices.warn|fixed|assume``
  (or a fix's declaration ``FixFamily(...).fixed``), as a literal, inside an expression, through a
  module-level dict, or printed as ``error[CODE]``, is declared with that kind;
- the registry and the docs' ``### `CODE``` headings name the same codes, both ways;
- at run time (``FLAX2TFJS_CHECK_CODES=1``, set by conftest for every test and the CLI runs they start)
  an undeclared code is refused.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from topology.vocabulary.codes import CODES, DECLARED, ERROR
from topology.vocabulary.errors import ConversionError, Notices

CODE = re.compile(r"[A-Z][A-Z0-9_]{2,}")
PRINTED = re.compile(r"\b(error|warning|fixed|assumption)\[([A-Z][A-Z0-9_]{2,})\]")
# A call whose first argument (or ``code=``) is a code, and the kind of message it makes.
RAISERS = {"ConversionError": ERROR, "VerificationFailed": ERROR, "Misfit": ERROR}
NOTICE_METHODS = {"warn": "warning", "fixed": "fixed", "assume": "assumption"}
# Sites that pass a code along rather than name it, and where the codes they pass are declared.
PASSED_ALONG = {
    ("writer/fixes/base.py", "fix.code"): "a fix's code, declared by FixFamily(...).fixed(CODE, ...) (scanned as a literal)",
}


@dataclass(frozen=True)
class Use:
    """One code a source file names, with the kind of message and where."""

    code: str
    kind: str
    where: str


def source_files() -> list[Path]:
    folders = ("writer", "topology", "examples", "scripts", "bench")
    files = [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]
    return files + [ROOT / "flax2tfjs.py"]  # the launcher prints error[FOREIGN_PACKAGE] itself


def _module_dicts(tree: ast.Module) -> dict[str, ast.Dict]:
    return {target.id: node.value for node in tree.body if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
            for target in node.targets if isinstance(target, ast.Name)}


def _codes_in(expr: ast.AST, dicts: dict[str, ast.Dict]) -> list[str]:
    """The code literals an argument expression can evaluate to (a conditional, a dict lookup with a default...)."""
    codes = []
    for node in ast.walk(expr):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE.fullmatch(node.value):
            codes.append(node.value)
        elif isinstance(node, ast.Name) and node.id in dicts:
            codes += _codes_in(ast.Tuple(elts=dicts[node.id].values, ctx=ast.Load()), {})
    return codes


def code_uses() -> tuple[list[Use], list[str]]:
    """Every code the sources raise, notice or print, and the sites whose code could not be found."""
    uses, unresolved = [], []
    for path in source_files():
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        dicts = _module_dicts(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                uses += [Use(code, kind, f"{rel}:{node.lineno}") for kind, code in PRINTED.findall(node.value) if code != "CODE"]
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in RAISERS:
                kind = RAISERS[func.id]
            elif isinstance(func, ast.Attribute) and func.attr in NOTICE_METHODS:
                kind = NOTICE_METHODS[func.attr]
            else:
                continue
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "code"), None)
            if arg is None:
                continue  # e.g. list.fixed() of something else: no code argument
            found = _codes_in(arg, dicts)
            uses += [Use(code, kind, f"{rel}:{node.lineno}") for code in found]
            if not found and (rel, ast.unparse(arg)) not in PASSED_ALONG:
                unresolved.append(f"{rel}:{node.lineno} {ast.unparse(func)}({ast.unparse(arg)}, ...)")
    return uses, unresolved


def documented_codes() -> list[str]:
    text = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    return re.findall(r"^### `([A-Z0-9_]+)`", text, re.M)


def test_every_code_raised_is_declared_with_its_kind():
    uses, unresolved = code_uses()
    assert len(uses) > 300 and len({u.code for u in uses}) > 100  # the scan itself works
    assert not unresolved, "a code passed as a variable: name the codes it can be, or list the site in PASSED_ALONG:\n" + \
        "\n".join(unresolved)
    undeclared = sorted(f"{u.where}: {u.code}" for u in uses if u.code not in CODES)
    assert not undeclared, "codes not declared in topology/vocabulary/codes.py:\n" + "\n".join(undeclared)
    wrong_kind = sorted(f"{u.where}: {u.kind}[{u.code}] is declared {CODES[u.code].kinds}" for u in uses
                        if u.kind not in CODES[u.code].kinds)
    assert not wrong_kind, "\n".join(wrong_kind)


def test_every_declared_code_is_used_documented_and_unique():
    declared = [code.code for code in DECLARED]
    assert len(declared) == len(set(declared)), "a code is declared twice"
    assert all(CODE.fullmatch(code.code) and code.meaning and "\n" not in code.meaning for code in DECLARED)
    used = {u.code for u in code_uses()[0]}
    assert not sorted(set(declared) - used), "codes declared but never raised: remove them (and their docs section)"
    documented = documented_codes()
    assert len(documented) == len(set(documented)), "a code has two sections in docs/troubleshooting.md"
    assert not sorted(set(declared) - set(documented)), "declared codes without a section in docs/troubleshooting.md"
    assert not sorted(set(documented) - set(declared)), "documented codes not declared in topology/vocabulary/codes.py"


def test_the_registry_lists_codes_in_the_docs_order():
    """One order for both, so a new code is added at the same place in each (under its section)."""
    documented = documented_codes()
    assert [code.code for code in DECLARED] == documented


def test_the_scan_finds_codes_in_expressions_and_dicts():
    tree = ast.parse('T = {1: "FROM_DICT"}\nraise ConversionError(T.get(k, "DEFAULT_CODE") if x else "OTHER_CODE", "m")')
    call = tree.body[1].exc
    assert sorted(_codes_in(call.args[0], _module_dicts(tree))) == ["DEFAULT_CODE", "FROM_DICT", "OTHER_CODE"]


def test_an_undeclared_code_is_refused_at_run_time(monkeypatch):
    monkeypatch.setenv("FLAX2TFJS_CHECK_CODES", "1")
    with pytest.raises(AssertionError, match="NOT_DECLARED_ANYWHERE"):
        ConversionError("NOT_DECLARED_ANYWHERE", "message")
    with pytest.raises(AssertionError, match="declared as assumption, not warning"):
        Notices().warn("POOLING", "a notice of the wrong kind")
    assert ConversionError("CHECKPOINT_NOT_FOUND", "m").code == "CHECKPOINT_NOT_FOUND"
    monkeypatch.setenv("FLAX2TFJS_CHECK_CODES", "0")  # a user's run: the error is made as before
    assert ConversionError("NOT_DECLARED_ANYWHERE", "m").render() == "error[NOT_DECLARED_ANYWHERE]: m"
