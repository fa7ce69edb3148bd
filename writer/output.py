"""Write into a temporary folder beside the destination; move it into place only when complete.

On any failure the destination is exactly as it was before.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from writer.errors import ConversionError


def check_destination(out_dir: Path, force: bool) -> None:
    """Refuse a destination that is a file, or a non-empty folder unless ``force``.

    Example:
        >>> check_destination(Path("/nonexistent/new_out"), force=False)
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ConversionError(
            "OUTPUT_NOT_A_FOLDER", f"{out_dir} exists and is a file",
            "choose a folder path for the output",
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ConversionError(
            "OUTPUT_NOT_EMPTY", f"output folder {out_dir} is not empty",
            "choose a new folder, or pass --force to replace its contents",
        )


@contextlib.contextmanager
def staged_output(out_dir: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``out_dir`` atomically.

    Example:
        >>> import tempfile; dest = Path(tempfile.mkdtemp()) / "out"
        >>> with staged_output(dest) as tmp:
        ...     _ = (tmp / "model.json").write_text("{}")
        >>> sorted(p.name for p in dest.iterdir())
        ['model.json']
    """
    out_dir = Path(out_dir)
    check_destination(out_dir, force)
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=parent))
    except OSError as exc:
        raise ConversionError(
            "OUTPUT_NOT_WRITABLE", f"cannot create files in {parent} ({exc.strerror})",
            "choose an output folder you can write to",
        ) from exc
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; outputs are meant to be served
        _replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    # --force (or an empty folder): swap, then delete the old contents.
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    old.rmdir()
    out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
