"""Docs that run: every console block of README.md and docs/ is executed and its output compared.

Each document runs in its own temporary folder holding a link to the repository's ``examples/``
(the bundled checkpoints and model code), blocks in document order, so a guide's ``verify`` reads
the model its ``convert`` wrote. ``tests/doc_blocks.py`` says how blocks are found and compared;
blocks marked ``<!-- not-run: reason -->`` are listed by ``test_not_run_blocks_are_listed``.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.doc_blocks import Block, matches, parse_doc
from writer import cli

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCKS = {doc.relative_to(ROOT).as_posix(): parse_doc(doc, ROOT) for doc in DOCS}
RUNNABLE = sorted(name for name, blocks in BLOCKS.items() if any(b.commands and not b.not_run for b in blocks))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", NO_COLOR="1", PATH=f"{os.path.dirname(sys.executable)}:{env['PATH']}")
    env.pop("FLAX2TFJS_SCHEMA_CHECK", None)  # as a user runs it
    return env


# `[cd DIR && ]python -m writer ARGS` without other shell syntax runs in this process: the same
# entry point (writer.cli.main) without paying a Python start and a JAX import per command.
_IN_PROCESS = re.compile(r"(?:cd (\S+) && )?python -m writer ([^;&|<>$`*\\\n]+)")


# Commands several docs run alike, with deterministic results (fixed PRNG keys), and the folder each
# makes: run once per session, then their output folder is copied (three guides save the same checkpoints).
SHARED = {"python examples/models/make_checkpoints.py ckpts": "ckpts"}
_shared: dict[str, tuple[int, str, Path]] = {}


def _run(command: str, folder: Path, status: int) -> tuple[int, str]:
    """Run one doc command in ``folder``; return its exit status and its stdout and stderr, interleaved."""
    if command in SHARED and command in _shared:
        status, output, made = _shared[command]
        shutil.copytree(made, folder / SHARED[command])
        return status, output
    simple = _IN_PROCESS.fullmatch(command)
    if simple:
        output, cwd = io.StringIO(), os.getcwd()
        os.chdir(folder / (simple.group(1) or "."))
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                status = cli.main(shlex.split(simple.group(2)))
        finally:
            os.chdir(cwd)
        return status, output.getvalue()
    # `( exit N )` first, so a doc's `echo $?` sees the previous command's status.
    done = subprocess.run(["bash", "-c", f"( exit {status} ); {command}"], cwd=folder, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    if command in SHARED and done.returncode == 0:
        _shared[command] = (done.returncode, done.stdout, folder / SHARED[command])
    return done.returncode, done.stdout


def _run_doc(blocks: list[Block], folder) -> list[str]:
    (folder / "examples").symlink_to(ROOT / "examples")
    failures = []
    for block in blocks:
        if block.write_to:
            target = folder / block.write_to
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text)
            continue
        if block.not_run or not block.commands:
            continue
        status = 0
        for command in block.commands:
            status, output = _run(command.command, folder, status)
            difference = matches(command.expected, output)
            if difference is not None:
                failures.append(f"{block.doc}:{command.line}: $ {command.command}\n{difference}")
    return failures


@pytest.mark.parametrize("doc", RUNNABLE)
def test_doc_blocks_print_what_the_doc_shows(doc, tmp_path):
    failures = _run_doc(BLOCKS[doc], tmp_path)
    assert not failures, "\n\n".join(failures)


def test_output_never_hides_in_an_untagged_block():
    """An untagged or `console` block is a session (`$ command`, then its output), so the test above
    sees every output the docs show; layouts and diagrams are tagged `text`."""
    untagged = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        opening = True  # fences alternate: opening, closing, opening, ...
        for number, line in enumerate(lines, 1):
            if not line.strip().startswith("```"):
                continue
            if opening and line.strip() in ("```", "```console") and not lines[number].startswith("$ "):
                untagged.append(f"{doc.relative_to(ROOT)}:{number}")
            opening = not opening
    assert not untagged, f"blocks that are neither a `$` session nor tagged (```text, ```python, ...): {untagged}"


def test_not_run_blocks_are_listed():
    not_run = [(b.where, b.not_run) for blocks in BLOCKS.values() for b in blocks if b.not_run]
    print("\n".join(f"not run: {where}: {reason}" for where, reason in not_run))
    assert all(reason for _, reason in not_run), "a not-run block needs a reason"
    ran = sum(1 for blocks in BLOCKS.values() for b in blocks if b.commands and not b.not_run)
    assert ran >= 10  # the scan itself finds the docs' sessions
