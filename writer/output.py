"""Write into a temporary folder beside the destination; move it into place only when complete.

On any failure the destination is exactly as it was before, and nothing is left beside it.

Rules (issue 10):

* ``--force`` replaces only an earlier conversion: a folder holding nothing but a ``model.json``
  this tool wrote (``userDefinedMetadata.flax2tfjs``) and ``group*-shard*of*.bin`` files.
  Anything else is refused naming one file that would have been deleted.
* The output may never be, lie inside, or contain the checkpoint.
* The new folder replaces the old one atomically (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere
  two renames whose interrupted state the next run repairs). A folder that cannot be renamed (a
  mount point, or the current directory) is filled in place: shards first, ``model.json`` last.
* Temporary folders are named ``.OUT.partial-<pid>-<start>-*`` (owner pid and its start time);
  the next run removes those whose owner is gone and never touches a live run's folder.
* The commit happens under an ``flock`` of the parent folder, after checking the destination
  again, so of two runs into one new folder exactly one wins.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from topology.vocabulary.errors import ConversionError

_SHARD = re.compile(r"^group\d+-shard\d+of\d+\.bin$")
_MAX_MODEL_JSON = 256 << 20  # a model.json this large is not one we wrote
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

# Returns the first entry of a folder that a --force replacement must not delete, or None.
Replaceable = Callable[[Path, frozenset], "Path | None"]


# ---------------------------------------------------------------- what --force may replace


def foreign_entry(folder: Path, skip: frozenset = frozenset()) -> Path | None:
    """The first entry of ``folder`` that is not part of an earlier flax2tfjs conversion, or None.

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "notes.txt").write_text("x")
        >>> foreign_entry(d).name
        'notes.txt'
    """
    entries = sorted(p for p in folder.iterdir() if p.name not in skip)
    for entry in entries:
        if entry.is_symlink() or not entry.is_file():
            return entry
        if entry.name == "model.json":
            if not _written_by_us(entry):
                return entry
        elif not _SHARD.match(entry.name):
            return entry
    return None


def _written_by_us(model_json: Path) -> bool:
    try:
        if model_json.stat().st_size > _MAX_MODEL_JSON:
            return False
        document = json.loads(model_json.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    meta = document.get("userDefinedMetadata") if isinstance(document, dict) else None
    provenance = meta.get("flax2tfjs") if isinstance(meta, dict) else None
    return isinstance(provenance, dict) and "version" in provenance


# ---------------------------------------------------------------- checks


def check_not_a_file(out_dir: Path) -> None:
    """Refuse an output path that exists and is not a folder.

    Example:
        >>> check_not_a_file(Path("/nonexistent/new_out"))
    """
    out_dir = Path(out_dir)
    if (out_dir.exists() or out_dir.is_symlink()) and not out_dir.is_dir():
        raise ConversionError(
            "OUTPUT_NOT_A_FOLDER", f"{out_dir} exists and is not a folder",
            "choose a folder path for the output",
        )


def check_overlap(out_dir: Path, checkpoint: Path | None) -> None:
    """Refuse an output folder equal to, inside, or containing the checkpoint (always, even with --force).

    Example:
        >>> check_overlap(Path("ck/out"), Path("ck"))      # doctest: +SKIP
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: OUTPUT_OVERLAPS_CHECKPOINT: ...
    """
    if checkpoint is None:
        return
    out = Path(os.path.realpath(out_dir))
    ck = Path(os.path.realpath(checkpoint))
    if out == ck or ck in out.parents or out in ck.parents:
        how = "is" if out == ck else ("lies inside" if ck in out.parents else "contains")
        raise ConversionError(
            "OUTPUT_OVERLAPS_CHECKPOINT", f"the output folder {out_dir} {how} the checkpoint {checkpoint}",
            "write the model to a new folder outside the checkpoint, e.g. ./model_tfjs",
        )


def check_destination(out_dir: Path, force: bool, checkpoint: Path | None = None,
                      replaceable: Replaceable = foreign_entry, ignore: Path | None = None) -> None:
    """Refuse a file, an overlap with the checkpoint, or a non-empty folder (with ``force``: one
    holding anything but an earlier conversion).

    Example:
        >>> check_destination(Path("/nonexistent/new_out"), force=False)
    """
    out_dir = Path(out_dir)
    check_not_a_file(out_dir)
    check_overlap(out_dir, checkpoint)
    if not out_dir.is_dir():
        return
    try:
        present = [p for p in out_dir.iterdir() if ignore is None or p.name != ignore.name]
    except OSError as exc:
        raise ConversionError("OUTPUT_NOT_WRITABLE", f"cannot list {out_dir} ({exc.strerror})",
                              "choose an output folder you can read and write") from exc
    if not present:
        return
    if not force:
        raise ConversionError(
            "OUTPUT_NOT_EMPTY", f"output folder {out_dir} is not empty",
            "choose a new folder, or pass --force to replace an earlier conversion in it",
        )
    offending = replaceable(out_dir, frozenset({ignore.name}) if ignore is not None else frozenset())
    if offending is not None:
        raise ConversionError(
            "OUTPUT_NOT_REPLACEABLE",
            f"--force would delete {offending}, which is not part of an earlier flax2tfjs conversion",
            "--force replaces only a folder holding a model.json written by flax2tfjs and its "
            "group*-shard*of*.bin files; choose a new folder or empty this one yourself",
        )


# ---------------------------------------------------------------- staging and commit


@contextlib.contextmanager
def staged_output(out_dir: Path, force: bool = False, checkpoint: Path | None = None,
                  replaceable: Replaceable = foreign_entry) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``out_dir`` atomically.

    Example:
        >>> import tempfile; dest = Path(tempfile.mkdtemp()) / "out"
        >>> with staged_output(dest) as tmp:
        ...     _ = (tmp / "model.json").write_text("{}")
        >>> sorted(p.name for p in dest.iterdir())
        ['model.json']
    """
    # A symlink to a folder: the folder it points to is the output (renaming would replace the link).
    out_dir = Path(os.path.realpath(out_dir) if Path(out_dir).is_symlink() else os.path.abspath(out_dir))
    if out_dir.parent == out_dir:
        raise ConversionError("OUTPUT_NOT_REPLACEABLE", f"the output folder {out_dir} is the file system root",
                              "choose a new folder for the output")
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _not_writable(parent, exc) from exc
    in_place = _must_fill_in_place(out_dir)
    stage_in = out_dir if in_place else parent
    remove_stale(stage_in, out_dir)
    check_destination(out_dir, force, checkpoint, replaceable)
    try:
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(out_dir, "partial"), dir=stage_in))
    except OSError as exc:
        raise _not_writable(stage_in, exc) from exc
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; outputs are meant to be served
        with _locked(parent):
            # Checked again under the lock: a concurrent run may have finished meanwhile.
            check_destination(out_dir, force, checkpoint, replaceable, ignore=staging if in_place else None)
            try:
                _commit(staging, out_dir, in_place)
            except OSError as exc:
                raise _not_writable(out_dir, exc) from exc
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno in _DISK_FULL:
            raise _not_writable(out_dir, exc) from exc
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _not_writable(where: Path, exc: OSError) -> ConversionError:
    if exc.errno in _DISK_FULL:
        return ConversionError("DISK_FULL", f"no space left while writing {where} ({exc.strerror})",
                               "free some disk space (or write to another disk) and convert again; "
                               "nothing was left behind")
    return ConversionError("OUTPUT_NOT_WRITABLE", f"cannot create files in {where} ({exc.strerror})",
                           "choose an output folder you can write to")


def _must_fill_in_place(out_dir: Path) -> bool:
    """A mount point cannot be renamed; the current directory should not be (the shell would be left
    in a deleted folder)."""
    if not out_dir.is_dir() or out_dir.is_symlink():
        return False
    try:
        return os.path.ismount(out_dir) or os.path.samefile(out_dir, os.getcwd())
    except OSError:
        return False


def _commit(staging: Path, out_dir: Path, in_place: bool) -> None:
    if in_place:
        _fill_in_place(staging, out_dir)
        return
    if not out_dir.exists():
        try:
            _rename_noreplace(staging, out_dir)
            return
        except FileExistsError:
            raise ConversionError("OUTPUT_NOT_EMPTY", f"output folder {out_dir} appeared while converting",
                                  "another conversion wrote it; choose a new folder") from None
    try:
        _swap(staging, out_dir)
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM):
            raise
        _fill_in_place(staging, out_dir)  # e.g. a mount point os.path.ismount did not see


def _swap(staging: Path, out_dir: Path) -> None:
    """Put ``staging`` at ``out_dir``; the old contents end at ``staging``'s name and are deleted."""
    if _exchange(staging, out_dir):
        shutil.rmtree(staging, ignore_errors=True)
        return
    # Two renames. A kill between them leaves OUT missing and the old folder as .OUT.old-<pid>-...;
    # remove_stale() of the next run renames it back.
    old = Path(tempfile.mkdtemp(prefix=_staging_prefix(out_dir, "old"), dir=out_dir.parent))
    old.rmdir()
    out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fill_in_place(staging: Path, out_dir: Path) -> None:
    """Replace the contents of a folder that cannot itself be replaced. Readers never see a model.json
    naming shards that are not all there: the old model.json goes first, the new one comes last."""
    with contextlib.suppress(FileNotFoundError):
        (out_dir / "model.json").unlink()
    for entry in out_dir.iterdir():
        if entry.name != staging.name and entry.name != "model.json":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    names = sorted(p.name for p in staging.iterdir())
    for name in [n for n in names if n != "model.json"] + [n for n in names if n == "model.json"]:
        shutil.move(str(staging / name), str(out_dir / name))
    staging.rmdir()


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the rename without replace still decides
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # an unreadable parent: no lock, the rename without replace still decides
        yield
        return
    try:
        with contextlib.suppress(OSError):  # file systems without flock
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- renameat2


_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """True when done; False when the OS has no renameat2 (the caller falls back)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if func(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _exchange(a: Path, b: Path) -> bool:
    return _renameat2(a, b, _RENAME_EXCHANGE)


def _rename_noreplace(src: Path, dst: Path) -> None:
    if _renameat2(src, dst, _RENAME_NOREPLACE):
        return
    if dst.exists():  # under the lock: only a run not using it could slip in here
        raise FileExistsError(errno.EEXIST, "exists", str(dst))
    src.rename(dst)


# ---------------------------------------------------------------- stale folders of dead runs


def _start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # field 22 of stat(5): starttime
    except (OSError, IndexError, ValueError):
        return 0


def _staging_prefix(out_dir: Path, kind: str) -> str:
    pid = os.getpid()
    return f".{out_dir.name}.{kind}-{pid}-{_start_time(pid)}-"


def _alive(pid: int, start: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _start_time(pid)
    return not (start and now and now != start)  # a reused pid is another process


def remove_stale(folder: Path, out_dir: Path) -> list[Path]:
    """Delete ``.OUT.partial-*`` folders of dead runs in ``folder``; restore an ``.OUT.old-*`` left
    by a run killed mid-swap when OUT is missing. Returns what was removed.

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp())
        >>> (d / ".out.partial-999999999-0-x").mkdir(); remove_stale(d, d / "out")[0].name
        '.out.partial-999999999-0-x'
    """
    pattern = re.compile(rf"^\.{re.escape(out_dir.name)}\.(partial|old)-(\d+)-(\d+)-")
    removed = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir():
            continue
        if _alive(int(match.group(2)), int(match.group(3))):
            continue
        if match.group(1) == "old" and not out_dir.exists() and folder == out_dir.parent:
            entry.rename(out_dir)
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed
