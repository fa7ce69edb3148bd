"""Read ``.npz`` archives whose keys are ``/``-joined tree paths, one array at a time."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from writer.errors import ConversionError
from writer.tensors import Checkpoint, TensorRef


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
        tensors = {}
        for member in members:
            key = member.filename[: -len(".npy")]
            tree_path = tuple(part for part in key.split("/") if part)
            shape, dtype = _npy_header(archive, member.filename)
            if dtype.hasobject:
                raise ConversionError(
                    "PICKLE_REFUSED",
                    f"{path}: array {key!r} holds Python objects, which numpy stores as pickles",
                    "save plain numeric arrays (np.asarray(x, dtype=np.float32)) instead",
                )
            tensors[tree_path] = TensorRef(
                tree_path, shape, dtype, _member_loader(path, member.filename), str(path)
            )
        archive.close()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
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


def _npy_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    with archive.open(name) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    return tuple(int(d) for d in shape), np.dtype(dtype)


def _member_loader(path: Path, name: str):
    def load() -> np.ndarray:
        with zipfile.ZipFile(path) as archive, archive.open(name) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)

    return load
