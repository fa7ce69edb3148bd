"""Read ``.npz`` archives whose keys are ``/``-joined tree paths, one array at a time."""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from topology.vocabulary.errors import ConversionError
from writer.readers.bounds import check_claim, claimed_nbytes
from topology.vocabulary.tensors import Checkpoint, TensorRef


def read_npz(path: Path) -> Checkpoint:
    """List the arrays of an ``.npz`` file without loading them.

    Keys such as ``params/Dense_0/kernel`` become tree paths; object arrays
    (which numpy would unpickle) are refused.

    Example:
        >>> import numpy as np, tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "m.npz")
        >>> np.savez(f, **{"params/Dense_0/bias": np.zeros(3, "float32")})
        >>> ck = read_npz(Path(f)); list(ck.tensors)
        [('params', 'Dense_0', 'bias')]
    """
    try:
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.infolist() if m.filename.endswith(".npy")]
        _refuse_shared_members(path, archive.infolist())
        tensors = {}
        keys: dict[tuple[str, ...], str] = {}
        for member in members:
            key = member.filename[: -len(".npy")]
            tree_path = tuple(part for part in key.split("/") if part)
            if tree_path in keys:
                raise ConversionError(
                    "CORRUPT_CHECKPOINT",
                    f"{path}: the keys {keys[tree_path]!r} and {key!r} both name {'/'.join(tree_path)!r}",
                    "save each array under one key only (no empty path parts, no duplicate members)",
                )
            keys[tree_path] = key
            shape, dtype, offset, fortran = _npy_header(archive, member.filename)
            if dtype.hasobject:
                raise ConversionError(
                    "PICKLE_REFUSED",
                    f"{path}: array {key!r} holds Python objects, which numpy stores as pickles",
                    "save plain numeric arrays (np.asarray(x, dtype=np.float32)) instead",
                )
            _check_member(path, key, member, shape, dtype, offset)
            tensors[tree_path] = TensorRef(
                tree_path, shape, dtype, _member_loader(path, member, shape, dtype, offset, fortran), str(path)
            )
        archive.close()
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ConversionError(
            "CORRUPT_CHECKPOINT", f"{path} is not a readable .npz archive ({exc})",
            "write it again with numpy.savez; the file may be truncated",
        ) from exc
    if not tensors:
        raise ConversionError(
            "EMPTY_CHECKPOINT", f"{path} holds no arrays",
            "save the parameters with numpy.savez(path, **{'params/Dense_0/kernel': ...})",
        )
    return Checkpoint("npz", path, tensors)


def _refuse_shared_members(path: Path, members: list[zipfile.ZipInfo]) -> None:
    """Each zip entry must own its bytes: entries whose data overlap (a million names for one small
    member, or a member inside another) would be read, and written, once per name."""
    spans = sorted((m.header_offset, m.header_offset + 30 + len(m.filename.encode()) + m.compress_size, m.filename)
                   for m in members)
    for (start, end, name), (next_start, _, next_name) in zip(spans, spans[1:]):
        if next_start < end:
            raise ConversionError(
                "CORRUPT_CHECKPOINT",
                f"{path}: the zip entries {name!r} and {next_name!r} share bytes (at offsets {start:,} and {next_start:,})",
                "the archive is forged or damaged: numpy.savez writes each array once; write it again",
            )


def _npy_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype, int, bool]:
    """Shape, dtype, header length and Fortran order of one member (numpy checks the header's syntax)."""
    with archive.open(name) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        offset = handle.tell()
    return tuple(int(d) for d in shape), np.dtype(dtype), offset, bool(fortran)


def _check_member(path: Path, key: str, member: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype,
                  offset: int) -> None:
    """The header's claim against the member: exact for stored members, bounded by the compressed size
    (and the stated inflation ratio) for deflated ones, before anything is allocated."""
    where = f"{path}: array {key!r}"
    check_claim(where, shape, dtype.itemsize, member.compress_size)
    nbytes = claimed_nbytes(shape, dtype.itemsize)
    if nbytes != member.file_size - offset:
        raise ConversionError(
            "CORRUPT_CHECKPOINT",
            f"{where} claims shape {shape} of {dtype.name} ({nbytes:,} bytes) but its member holds "
            f"{max(0, member.file_size - offset):,} bytes of data",
            "the archive is damaged or forged; write it again with numpy.savez",
        )


def _member_loader(path: Path, member: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype, offset: int,
                   fortran: bool = False):
    def load() -> np.ndarray:
        # Streamed into one preallocated array: memory is the tensor, whatever the compression.
        # A Fortran-ordered member holds the transpose's bytes in C order.
        array = np.empty(shape[::-1] if fortran else shape, dtype)
        target = memoryview(array.reshape(-1).view(np.uint8)) if array.size else memoryview(b"")
        try:
            with zipfile.ZipFile(path) as archive, archive.open(member.filename) as handle:
                handle.read(offset)
                done = 0
                while done < len(target):
                    chunk = handle.read(min(1 << 20, len(target) - done))
                    if not chunk:
                        raise ValueError(f"the data ends after {done:,} of {len(target):,} bytes")
                    target[done:done + len(chunk)] = chunk
                    done += len(chunk)
                if handle.read(1):
                    raise ValueError("the member holds more bytes than its header's shape")
            if fortran:
                array = array.T
        except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise ConversionError(
                "CORRUPT_CHECKPOINT", f"{path}: cannot read array {member.filename[:-4]!r} ({exc})",
                "the archive is damaged or truncated; write it again with numpy.savez",
            ) from exc
        return array

    return load
