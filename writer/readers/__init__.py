"""Checkpoint readers. :func:`read_checkpoint` detects the format from content.

Supported: Flax msgpack (``flax.serialization.to_bytes``, also TrainStates and
legacy ``checkpoint_<step>`` files), Orbax folders (StandardCheckpointer,
CheckpointManager, legacy ``checkpoint_<step>`` folders) and ``.npz`` archives
with ``/``-joined keys, each declared in :data:`writer.readers.formats.FORMATS` (how it is
recognised, what reads it). Pickle files are refused: unpickling runs code.
"""
from __future__ import annotations

from pathlib import Path

from topology.vocabulary.errors import ConversionError
from topology.vocabulary.tensors import Checkpoint
from writer.readers.formats import folder_format, format_of_head
from writer.readers.steps import LEGACY_STEP, choose_step, legacy_steps, step_number
from writer.regular_files import require_regular_file

_PICKLE_SUFFIXES = {".pkl", ".pickle", ".p", ".pt", ".pth", ".joblib"}
_IMAGE_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
}


def read_checkpoint(path: str | Path, step: int | None = None) -> Checkpoint:
    """Open a checkpoint file or folder of any supported format, lazily.

    ``step`` picks a step of a CheckpointManager or legacy ``checkpoint_<step>``
    folder; by default the newest step is read.

    Example:
        >>> ck = read_checkpoint("examples/mnist_ckpt")          # doctest: +SKIP
        >>> ck.format, sorted(ck.tensors)[0]                    # doctest: +SKIP
        ('orbax', ('params', 'Conv_0', 'bias'))
    """
    path = Path(path)
    if not path.exists():
        raise ConversionError(
            "CHECKPOINT_NOT_FOUND",
            f"no file or folder at {path}",
            "check the path; a checkpoint is a Flax msgpack file, an Orbax folder or an .npz file",
        )
    if path.is_dir():
        return _read_directory(path, step)
    require_regular_file(path, "the checkpoint")
    return _read_file(path)


def _read_directory(path: Path, step: int | None) -> Checkpoint:
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise ConversionError(
            "EMPTY_CHECKPOINT", f"folder {path} is empty",
            "point to the folder your training run saved its checkpoint into",
        )
    legacy = legacy_steps(entries)
    if legacy:
        chosen = legacy[choose_step(path, legacy, {}, step)]
        checkpoint = read_checkpoint(chosen)
        checkpoint.step = checkpoint.step if checkpoint.step is not None else step_number(chosen.name, LEGACY_STEP)
        return checkpoint
    return folder_format().read(path, step)


def _read_file(path: Path) -> Checkpoint:
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        raise ConversionError(
            "EMPTY_CHECKPOINT", f"file {path} is empty (0 bytes)",
            "the save was probably interrupted; save the checkpoint again",
        )
    if path.suffix.lower() in _PICKLE_SUFFIXES or _looks_like_pickle(head):
        raise ConversionError(
            "PICKLE_REFUSED",
            f"{path} is a pickle file; loading it would run arbitrary code",
            "save the parameters with flax.serialization.to_bytes, Orbax, or numpy.savez instead",
        )
    for magic, what in _IMAGE_MAGIC.items():  # before the formats: a PNG's 0x89 is also a msgpack map's first byte
        if head.startswith(magic):
            raise ConversionError(
                "NOT_A_CHECKPOINT", f"{path} is {what}, not a checkpoint",
                "pass a Flax msgpack file, an Orbax checkpoint folder or an .npz file",
            )
    checkpoint_format = format_of_head(head)
    if checkpoint_format is not None:
        return checkpoint_format.read(path)
    raise ConversionError(
        "NOT_A_CHECKPOINT",
        f"{path} is not a checkpoint format flax2tfjs knows (first bytes {head[:4].hex()})",
        "pass a Flax msgpack file (flax.serialization.to_bytes), an Orbax folder or an .npz file",
    )


def _looks_like_pickle(head: bytes) -> bool:
    # Protocol 2+ starts with PROTO (0x80) then the version; 0x80 alone is also an
    # empty msgpack map, so the version byte decides.
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
