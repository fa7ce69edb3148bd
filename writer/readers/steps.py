"""Steps of a training run's checkpoint folder: which exist, which are unfinished, which one to read.

One resolver for the readers (``--step N`` or the newest), the Orbax reader and
``--all-steps``. It knows three layouts, by their files, never by names alone:

* legacy ``checkpoint_<n>`` files or folders (flax's ``save_checkpoint``); they take precedence;
* CheckpointManager roots: numbered step folders, ``<n>/`` or ``<prefix>_<n>/``;
* unfinished Orbax saves ``<n>.orbax-checkpoint-tmp-*``, which are never read.

Pure ``pathlib``: no tensorstore, so listing steps costs nothing.

Example:
    >>> import tempfile; root = Path(tempfile.mkdtemp())
    >>> for n in (5, 10): (root / f"ckpt_{n}" / "default").mkdir(parents=True)
    >>> for n in (5, 10): _ = (root / f"ckpt_{n}" / "default" / "_METADATA").write_text("{}")
    >>> (root / "20.orbax-checkpoint-tmp-123").mkdir()
    >>> finished, unfinished = step_folders(root.iterdir())
    >>> sorted(finished), sorted(unfinished), choose_step(root, finished, unfinished, None)
    ([5, 10], [20], 10)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from topology.vocabulary.errors import ConversionError

TMP_MARK = ".orbax-checkpoint-tmp"
# A CheckpointManager's default step folder name.
DIGITS = re.compile(r"^(\d+)$")
# CheckpointManager(step_prefix="ckpt") names steps "ckpt_5"; flax's legacy
# save_checkpoint names them "checkpoint_5".
PREFIXED_STEP = re.compile(r"^(?:[A-Za-z][\w.-]*_)?(\d+)$")
# The step of an item folder saved by itself (flax's save_checkpoint through orbax).
LEGACY_ITEM_STEP = re.compile(r"^(?:checkpoint_)?(\d+)$")
# flax's legacy save_checkpoint: checkpoint_<n> files (msgpack) or folders (orbax).
LEGACY_STEP = re.compile(r"^checkpoint_(\d+)$")
# Markers that only an item folder (one saved pytree) contains.
ITEM_MARKERS = ("_METADATA", "manifest.ocdbt", "array_metadatas", "_sharding")


def step_number(name: str, pattern: re.Pattern[str] = DIGITS) -> int | None:
    """The step number in ``name`` by ``pattern``, or None.

    Example:
        >>> step_number("ckpt_20", PREFIXED_STEP), step_number("ckpt_20"), step_number("checkpoint_3", LEGACY_STEP)
        (20, None, 3)
    """
    match = pattern.match(name)
    return int(match.group(1)) if match else None


def legacy_steps(entries: Iterable[Path]) -> dict[int, Path]:
    """The legacy ``checkpoint_<n>`` entries among ``entries``, by step.

    Example:
        >>> legacy_steps([Path("checkpoint_7"), Path("notes.txt")])
        {7: PosixPath('checkpoint_7')}
    """
    return {int(m.group(1)): p for p in entries if (m := LEGACY_STEP.match(p.name))}


def is_item(folder: Path) -> bool:
    """Whether ``folder`` is one saved pytree (an Orbax *item*: ``_METADATA``, OCDBT or zarr files)."""
    if any((folder / marker).exists() for marker in ITEM_MARKERS):
        return True
    if any(folder.glob("ocdbt.process_*")):
        return True
    # Non-OCDBT layout of an old save that lost _METADATA: one zarr folder per array.
    return any((sub / ".zarray").is_file() or (sub / "zarr.json").is_file()
               for sub in folder.iterdir() if sub.is_dir())


def looks_like_step(folder: Path) -> bool:
    """Whether ``folder`` is a CheckpointManager step: an item, or a folder of items."""
    if (folder / "_CHECKPOINT_METADATA").is_file() or is_item(folder):
        return True
    return any(sub.is_dir() and is_item(sub) for sub in folder.iterdir())


def step_folders(entries: Iterable[Path]) -> tuple[dict[int, Path], dict[int, Path]]:
    """``(finished, unfinished)`` numbered step folders among ``entries`` (a CheckpointManager root's).

    ``<n>/`` always counts; ``<prefix>_<n>/`` only when it holds a checkpoint.
    """
    finished: dict[int, Path] = {}
    unfinished: dict[int, Path] = {}
    for sub in sorted(p for p in entries if p.is_dir() and not p.name.startswith(".")):
        if TMP_MARK in sub.name:
            number = step_number(sub.name.split(TMP_MARK)[0], PREFIXED_STEP)
            if number is not None:
                unfinished[number] = sub
            continue
        number = step_number(sub.name, DIGITS)
        if number is None and looks_like_step(sub):
            number = step_number(sub.name, PREFIXED_STEP)
        if number is not None:
            finished[number] = sub
    return finished, unfinished


def choose_step(folder: Path, finished: dict[int, Path], unfinished: dict[int, Path], step: int | None) -> int:
    """The step to read: ``step`` (``--step``), else the newest finished one.

    Raises ``STEP_NOT_FOUND`` for a step that is not there, ``INCOMPLETE_CHECKPOINT``
    for one that was never finished (or when no step is).

    Example:
        >>> choose_step(Path("ck"), {1: Path("ck/1")}, {}, 3)
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: STEP_NOT_FOUND: step 3 is not in ck (steps found: 1)
    """
    if step is None:
        if not finished:
            raise incomplete(folder, f"{folder} holds only unfinished steps "
                                     f"({', '.join(map(str, sorted(unfinished)))})")
        return max(finished)
    if step in finished:
        return step
    if step in unfinished:
        raise incomplete(folder, f"step {step} in {folder} was never finished ({unfinished[step].name})")
    listed = ", ".join(map(str, sorted(finished))) or "none finished"
    raise ConversionError(
        "STEP_NOT_FOUND", f"step {step} is not in {folder} (steps found: {listed})",
        "pass one of the listed steps with --step, or leave --step out for the newest",
    )


def incomplete(folder: Path, message: str) -> ConversionError:
    """The error for an unfinished save (``INCOMPLETE_CHECKPOINT``)."""
    return ConversionError(
        "INCOMPLETE_CHECKPOINT", message,
        "the save was interrupted (or is still running); wait for it to finish, "
        "pick a finished step with --step, or save again",
    )
