"""The checkpoint formats flax2tfjs reads, declared once: name, how a file or folder is recognised, the reader.

:func:`writer.readers.read_checkpoint` dispatches through :data:`FORMATS` (a file by its first
bytes, in this order; a folder by the one folder format), and the studio lists and accepts the
files whose suffix a format declares (:func:`file_suffixes`) and marks the folders a folder
format recognises by name (:func:`folder_markers`). Adding a reader is one entry here (see
docs/architecture.md, "How to add a reader").

Example:
    >>> [f.name for f in FORMATS]
    ['flax-msgpack', 'npz', 'orbax']
    >>> file_suffixes()
    ('.msgpack', '.npz')
    >>> format_of_head(b"PK\\x03\\x04....").name
    'npz'
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from topology.vocabulary.tensors import Checkpoint
from writer.readers.flax_msgpack import read_flax_msgpack
from writer.readers.npz import read_npz


@dataclass(frozen=True)
class CheckpointFormat:
    """One readable format: a file format (``recognises`` its first 8 bytes) or a folder format (``markers``).

    ``read`` takes the path, and for a folder format also the ``--step`` (None: the newest).

    Example:
        >>> FORMATS[0].recognises(bytes([0x81, 0xa6]))
        True
    """

    name: str  # as the report and the model.json metadata name it
    read: Callable[..., Checkpoint]
    suffixes: tuple[str, ...] = ()  # file names the studio lists and accepts for upload
    recognises: Callable[[bytes], bool] | None = None  # a file format: is this its first 8 bytes?
    markers: tuple[str, ...] = ()  # a folder format: names inside the folder the studio shows it by

    @property
    def is_folder(self) -> bool:
        return self.recognises is None


def looks_like_msgpack_map(head: bytes) -> bool:
    """A msgpack map starts the file (fixmap 0x80-0x8f, map16, map32): Flax's ``to_bytes`` writes one."""
    first = head[0]
    return 0x80 <= first <= 0x8F or first in (0xDE, 0xDF)


def looks_like_zip(head: bytes) -> bool:
    """A zip archive (an .npz) starts with a local file header, or is an empty archive."""
    return head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06")


def read_orbax_folder(path: Path, step: int | None) -> Checkpoint:
    """Read an Orbax folder (StandardCheckpointer item, CheckpointManager root or step)."""
    from writer.readers.orbax import read_orbax  # imports tensorstore (~1 s): only for Orbax folders

    return read_orbax(path, step)


FORMATS: tuple[CheckpointFormat, ...] = (
    CheckpointFormat("flax-msgpack", read_flax_msgpack, suffixes=(".msgpack",), recognises=looks_like_msgpack_map),
    CheckpointFormat("npz", read_npz, suffixes=(".npz",), recognises=looks_like_zip),
    CheckpointFormat("orbax", read_orbax_folder,
                     markers=("_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt", "checkpoint")),
)


def format_of_head(head: bytes) -> CheckpointFormat | None:
    """The file format whose first bytes ``head`` are, if any."""
    return next((f for f in FORMATS if not f.is_folder and f.recognises(head)), None)


def folder_format() -> CheckpointFormat:
    """The format a checkpoint folder is read as (after legacy ``checkpoint_<step>`` folders are resolved)."""
    return next(f for f in FORMATS if f.is_folder)


def file_suffixes() -> tuple[str, ...]:
    """Every file suffix a format declares, in declaration order."""
    return tuple(suffix for f in FORMATS for suffix in f.suffixes)


def folder_markers() -> tuple[str, ...]:
    """Every name inside a folder by which a folder format is recognised."""
    return tuple(marker for f in FORMATS for marker in f.markers)
