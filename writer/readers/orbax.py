"""Read Orbax checkpoint folders array by array with tensorstore, without jax or orbax.

Accepted folders (the kind is found from the files, never from names alone):

* an *item* folder: what ``StandardCheckpointer().save(path, tree)``,
  ``PyTreeCheckpointer`` or ``flax.training.checkpoints.save_checkpoint`` write
  (``_METADATA`` plus OCDBT files or one zarr folder per array);
* a *step* folder of a ``CheckpointManager``: item folders such as ``default/``,
  ``state/`` or ``params/``;
* a ``CheckpointManager`` root: numbered step folders, unfinished
  ``<step>.orbax-checkpoint-tmp-*`` folders are ignored.

``_METADATA`` lists every leaf in jax flattening order: dict keys sorted as
strings (``Dense_10`` before ``Dense_2``), dataclass fields (TrainState) in
field order. Tensors keep that order. Array shapes and dtypes come from each
array's ``.zarray`` (metadata only); data is read by ``TensorRef.load``.

Orbax's default layouts (OCDBT or one folder per array, zarr v2, zstd) are read
directly (:mod:`writer.readers.orbax_direct`); everything else, and any damage,
goes through tensorstore, imported only then (it costs ~0.6 s).
"""
from __future__ import annotations

import ast
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

if TYPE_CHECKING:  # imported for real only when a checkpoint needs the fallback (~0.6 s)
    import tensorstore as ts

from topology.vocabulary.errors import ConversionError
from writer.readers.bounds import MAX_NBYTES, check_claim, claimed_nbytes
from writer.readers.ocdbt import Unreadable
from writer.readers.orbax_direct import DirectArray, open_direct
from writer.readers.steps import (
    LEGACY_ITEM_STEP, PREFIXED_STEP, TMP_MARK, choose_step, incomplete, is_item, step_folders, step_number,
)
from writer.regular_files import loads_strict_json, read_small_file, regular_bytes
from topology.vocabulary.tensors import Checkpoint, TensorRef, TreePath, path_str

_METADATA = "_METADATA"
MAX_METADATA_BYTES = 256 << 20  # ~1 KB per leaf: far beyond any real tree
# Items tried in this order when a step folder holds several; the first holds
# the most (a whole train state contains the params).
_PREFERRED_ITEMS = ("default", "state", "train_state", "params")
_SKIPPED_VALUE_TYPES = {"None", "Dict", "List", "Tuple", "NamedTuple", "Unknown"}
_EXPECTED = (
    "expected an Orbax checkpoint: a folder with a _METADATA file (StandardCheckpointer / "
    "PyTreeCheckpointer), a step folder holding item folders such as default/, or a "
    "CheckpointManager folder holding numbered step folders"
)


def read_orbax(path: Path, step: int | None = None) -> Checkpoint:
    """List the arrays of an Orbax checkpoint folder without reading their data.

    ``path`` may be an item folder, a CheckpointManager step folder or a
    CheckpointManager root; ``step`` picks a step of a root (newest by default).
    Python-number leaves (e.g. ``TrainState.step``) land in ``scalars``.

    Example:
        >>> import orbax.checkpoint as ocp, numpy as np, tempfile   # doctest: +SKIP
        >>> d = Path(tempfile.mkdtemp()) / "ck"                      # doctest: +SKIP
        >>> with ocp.StandardCheckpointer() as c:                    # doctest: +SKIP
        ...     c.save(d, {"params": {"w": np.ones(3, "float32")}, "step": 5})
        >>> ck = read_orbax(d); list(ck.tensors), ck.scalars          # doctest: +SKIP
        ([('params', 'w')], {('step',): 5})
    """
    path = Path(path)
    if not path.exists():
        raise ConversionError(
            "CHECKPOINT_NOT_FOUND", f"no file or folder at {path}",
            "check the path; an Orbax checkpoint is a folder",
        )
    if not path.is_dir():
        raise ConversionError("NOT_A_CHECKPOINT", f"{path} is a file; {_EXPECTED}",
                              "pass the folder Orbax saved into")
    try:
        return _resolve(path, step, depth=0)
    except OSError as exc:
        raise ConversionError(
            "CORRUPT_CHECKPOINT", f"cannot read the Orbax checkpoint in {path} ({exc})",
            "check that the folder and its files are readable",
        ) from exc


# ---------------------------------------------------------------- folder kinds


def _resolve(folder: Path, step: int | None, depth: int) -> Checkpoint:
    if TMP_MARK in folder.name:
        raise incomplete(folder, f"{folder} is an unfinished Orbax save")
    if is_item(folder):
        own_step = step_number(folder.name, LEGACY_ITEM_STEP)
        _check_own_step(folder, own_step, step)
        checkpoint = _read_item(folder)
        checkpoint.step = own_step
        return checkpoint

    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    steps, unfinished = step_folders(subdirs)
    if (steps or unfinished) and depth == 0:
        chosen = choose_step(folder, steps, unfinished, step)
        checkpoint = _resolve(steps[chosen], None, depth + 1)
        checkpoint.step = chosen
        return checkpoint

    items = {p.name: p for p in subdirs if TMP_MARK not in p.name and is_item(p)}
    if items:
        own_step = step_number(folder.name, PREFIXED_STEP)
        _check_own_step(folder, own_step, step)
        checkpoint = _read_item(items[_choose_item(folder, items)])
        checkpoint.step = own_step
        return checkpoint
    if any(TMP_MARK in p.name for p in subdirs):
        raise incomplete(folder, f"{folder} holds only unfinished Orbax saves")
    if (folder / "_CHECKPOINT_METADATA").is_file():
        raise ConversionError(
            "CORRUPT_CHECKPOINT",
            f"{folder} has an Orbax _CHECKPOINT_METADATA file but no item folder "
            "(e.g. default/) with the saved arrays",
            "the item folders were deleted or never written; save the checkpoint again",
        )
    found = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    shown = ", ".join(found[:6]) + (", ..." if len(found) > 6 else "")
    raise ConversionError(
        "NOT_A_CHECKPOINT", f"{folder} is not an Orbax checkpoint ({_EXPECTED}; found: {shown})",
        "point to the folder your training run saved its checkpoint into",
    )


def _check_own_step(folder: Path, own_step: int | None, step: int | None) -> None:
    if step is None or step == own_step:
        return
    what = f"step {own_step}" if own_step is not None else "a single checkpoint without steps"
    raise ConversionError(
        "STEP_NOT_FOUND", f"step {step} was asked for but {folder} is {what}",
        "pass the CheckpointManager folder that holds the numbered steps, "
        "or leave --step out",
    )


def _choose_item(folder: Path, items: dict[str, Path]) -> str:
    if len(items) == 1:
        return next(iter(items))
    for name in _PREFERRED_ITEMS:
        if name in items:
            return name
    names = ", ".join(sorted(items))
    raise ConversionError(
        "AMBIGUOUS_CHECKPOINT_ITEM",
        f"{folder} holds several checkpoint items ({names}) and none is named "
        f"{', '.join(_PREFERRED_ITEMS)}",
        f"pass the item folder itself, e.g. {folder / sorted(items)[0]}",
    )


# ---------------------------------------------------------------- one item


def _read_item(folder: Path) -> Checkpoint:
    metadata = _load_metadata(folder)
    use_ocdbt = metadata.get("use_ocdbt")
    if not isinstance(use_ocdbt, bool):  # older saves did not record it
        use_ocdbt = (folder / "manifest.ocdbt").is_file()
    if use_ocdbt and not (folder / "manifest.ocdbt").is_file():
        raise ConversionError(
            "CORRUPT_CHECKPOINT",
            f"{folder} is an OCDBT checkpoint but manifest.ocdbt is missing",
            "the save did not finish merging its files; save the checkpoint again",
        )
    driver = "zarr3" if metadata.get("use_zarr3") else "zarr"
    reader = _ArrayReader(
        folder, driver, use_ocdbt,
        # Older saves skipped chunks equal to the fill value; reading them as
        # missing would fail, so only those are filled (as orbax does).
        fill_missing=not metadata.get("store_array_data_equal_to_fill_value", False),
    )

    arrays: list[tuple[TreePath, str]] = []
    numbers: list[tuple[TreePath, str]] = []
    strings: list[tuple[TreePath, str]] = []
    names: dict[str, TreePath] = {}
    for key, entry in metadata["tree_metadata"].items():
        tree_path, value_type, skip = _leaf_info(folder, key, entry)
        if skip or value_type in _SKIPPED_VALUE_TYPES:
            continue  # empty containers and None leaves carry no data
        name = ".".join(tree_path)  # orbax's parameter name for the leaf
        if name in names:  # two leaves would read (and write) the same array folder
            raise ConversionError(
                "CORRUPT_CHECKPOINT",
                f"{folder}: the leaves {path_str(names[name])} and {path_str(tree_path)} both name the array {name!r}",
                "the _METADATA file is forged or damaged: Orbax stores each leaf once; save the checkpoint again",
            )
        names[name] = tree_path
        if value_type == "string":
            strings.append((tree_path, name))
        elif value_type == "scalar":
            numbers.append((tree_path, name))
        else:  # jax.Array, np.ndarray and custom array handlers
            arrays.append((tree_path, name))

    if not use_ocdbt:  # a missing array folder fails here, before tens of thousands of opens are issued
        marker = "zarr.json" if driver == "zarr3" else ".zarray"
        for tree_path, name in arrays + numbers:
            if not (reader.confined(name) / marker).is_file():
                raise reader.damaged(tree_path, "cannot open", FileNotFoundError(f"{name}/{marker} does not exist"))
    direct = open_direct(folder, driver, use_ocdbt, [n for _p, n in arrays + numbers])
    if direct is not None:
        stores: dict[TreePath, Any] = {p: direct[n] for p, n in arrays + numbers}
    else:  # Open every array at once: tensorstore overlaps the metadata reads.
        pending = [(p, n, reader.open_async(n)) for p, n in arrays + numbers]
        stores = {p: reader.finish_open(p, future) for p, _n, future in pending}

    tensors: dict[TreePath, TensorRef] = {}
    for tree_path, _name in arrays:
        store = stores[tree_path]
        dtype = store.dtype if direct is not None else _numpy_dtype(folder, tree_path, store)
        check_claim(f"{folder}: tensor {path_str(tree_path)}", store.shape, dtype.itemsize, MAX_NBYTES)
        tensors[tree_path] = TensorRef(
            tree_path, tuple(int(d) for d in store.shape), dtype,
            reader.loader(tree_path, store), str(folder), slices=reader.slicer(tree_path, store),
        )
    scalars: dict[TreePath, Any] = {}
    for tree_path, _name in numbers:
        store = stores[tree_path]
        if claimed_nbytes(store.shape, 1) != 1:
            raise ConversionError(
                "CORRUPT_CHECKPOINT",
                f"{folder}: {path_str(tree_path)} is listed as a scalar in _METADATA but has shape {tuple(store.shape)}",
                "the _METADATA file does not match the arrays; save the checkpoint again",
            )
        scalars[tree_path] = reader.loader(tree_path, store)().item()
    scalars.update(_read_strings(folder, strings))

    if not tensors:
        raise ConversionError(
            "EMPTY_CHECKPOINT", f"Orbax checkpoint {folder} holds no arrays",
            "save the model parameters (e.g. state.params), not only counters or settings",
        )
    checkpoint = Checkpoint("orbax", folder, tensors, scalars)
    checkpoint.closers.append(reader.close)
    return checkpoint


def _load_metadata(folder: Path) -> dict:
    meta_file = folder / _METADATA
    if not meta_file.is_file():
        if (folder / "checkpoint").is_file():
            raise ConversionError(
                "UNSUPPORTED_ORBAX_VERSION",
                f"{folder} was written by an old Orbax (a 'checkpoint' msgpack file and no "
                "_METADATA), which flax2tfjs does not read",
                "restore it with the Orbax version that wrote it and save it again with "
                "orbax.checkpoint.StandardCheckpointer",
            )
        raise ConversionError(
            "CORRUPT_CHECKPOINT",
            f"{folder} looks like an Orbax checkpoint but has no _METADATA file",
            "the save was interrupted or the file was deleted; save the checkpoint again",
        )
    try:
        metadata = loads_strict_json(read_small_file(meta_file, MAX_METADATA_BYTES, "the Orbax file").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConversionError(
            "CORRUPT_CHECKPOINT", f"{meta_file} is not valid JSON ({exc})",
            "the file is damaged; save the checkpoint again",
        ) from exc
    if not isinstance(metadata, dict) or not isinstance(metadata.get("tree_metadata"), dict):
        raise ConversionError(
            "CORRUPT_CHECKPOINT", f"{meta_file} has no 'tree_metadata' table",
            "the file is damaged or not from Orbax; save the checkpoint again",
        )
    return metadata


def _leaf_info(folder: Path, key: str, entry: Any) -> tuple[TreePath, str, bool]:
    """The tree path, orbax value type and skip flag of one ``_METADATA`` entry."""
    try:
        keys = entry.get("key_metadata")
        if keys is not None:
            tree_path = tuple(str(k["key"]) for k in keys)
        else:  # the table key itself is the repr of the path tuple
            tree_path = tuple(str(k) for k in ast.literal_eval(key))
        value = entry.get("value_metadata") or {}
        return tree_path, str(value.get("value_type", "")), bool(value.get("skip_deserialize"))
    except (AttributeError, KeyError, TypeError, ValueError, SyntaxError) as exc:
        raise ConversionError(
            "CORRUPT_CHECKPOINT", f"{folder / _METADATA}: entry {key!r} is malformed ({exc!r})",
            "the file is damaged; save the checkpoint again",
        ) from exc


def _numpy_dtype(folder: Path, tree_path: TreePath, store: ts.TensorStore) -> np.dtype:
    try:
        return np.dtype(store.dtype.numpy_dtype)
    except (TypeError, ValueError) as exc:
        raise ConversionError(
            "CORRUPT_CHECKPOINT",
            f"{folder}: tensor {path_str(tree_path)} has dtype {store.dtype.name}, "
            "which has no numpy equivalent",
            "save numeric arrays (float32, bfloat16, int32, ...) only",
        ) from exc


def _read_strings(folder: Path, strings: list[tuple[TreePath, str]]) -> dict[TreePath, str]:
    if not strings:
        return {}
    try:
        table = loads_strict_json(read_small_file(folder / "_strings.json", MAX_METADATA_BYTES, "the Orbax file"))
    except (OSError, ValueError, ConversionError):
        return {}  # strings never carry weights; losing them loses nothing converted
    if not isinstance(table, dict):
        return {}
    return {p: table[n] for p, n in strings if isinstance(table.get(n), str)}


class _ArrayReader:
    """Builds tensorstore specs for one item folder the way orbax does, and wraps errors.

    tensorstore raises plain ValueError/RuntimeError with status text for missing
    or damaged files; every call is wrapped so they surface as CORRUPT_CHECKPOINT
    naming the tensor.
    """

    def __init__(self, folder: Path, driver: str, use_ocdbt: bool, fill_missing: bool) -> None:
        self.folder = Path(os.path.realpath(folder))  # tensorstore refuses ".." in paths
        self.driver = driver
        self.use_ocdbt = use_ocdbt
        self.fill_missing = fill_missing
        self._context: Any = None  # created with the first tensorstore open: the direct reader needs none
        self.stores: dict[TreePath, ts.TensorStore] = {}
        self._ocdbt_bytes: int | None = None

    @property
    def context(self) -> Any:
        if self._context is None:
            import ml_dtypes  # noqa: F401  (registers bfloat16 & co. with numpy for tensorstore)
            import tensorstore as ts  # ~0.6 s: paid only when the direct reader cannot read the checkpoint

            # The cache pool keeps OCDBT B-tree nodes between opens (as orbax's context).
            # One copy thread: orbax writes each array as one chunk, so more threads
            # add no speed, while each thread's malloc arena keeps a freed tensor's
            # pages (measured: 8 x 25 MB tensors peak at 205 MB RSS with the default,
            # 132 MB with one thread; reading speed unchanged).
            self._context = ts.Context({
                "cache_pool#ocdbt": {"total_bytes_limit": 64_000_000},
                "data_copy_concurrency": {"limit": 1},
            })
        return self._context

    def stored_bytes(self, name: str) -> int:
        """Bytes on disk that can hold the array ``name``: its own folder, or every OCDBT data file."""
        if self.use_ocdbt:
            if self._ocdbt_bytes is None:
                self._ocdbt_bytes = regular_bytes(self.folder, refuse_special=True)
            return self._ocdbt_bytes
        return regular_bytes(self.confined(name), refuse_special=True)

    def confined(self, name: str) -> Path:
        """The folder of array ``name``, refused if it lies outside the checkpoint (absolute names, ``..``,
        symlinks out)."""
        target = Path(os.path.realpath(self.folder / name))
        if target == self.folder or self.folder not in target.parents:
            raise ConversionError(
                "CORRUPT_CHECKPOINT",
                f"{self.folder}: _METADATA names the array {name!r}, which lies outside the checkpoint folder",
                "flax2tfjs reads only files inside the checkpoint; the _METADATA file is damaged or forged",
            )
        return target

    def spec(self, name: str) -> dict:
        if self.use_ocdbt:
            kvstore = {
                "driver": "ocdbt",
                "base": {"driver": "file", "path": f"{self.folder}/"},
                "path": f"{name}/",
                "cache_pool": "cache_pool#ocdbt",
            }
        else:
            kvstore = {"driver": "file", "path": f"{self.confined(name)}/"}
        return {
            "driver": self.driver,
            "kvstore": kvstore,
            "recheck_cached_data": False,
            "recheck_cached_metadata": False,
            "fill_missing_data_reads": self.fill_missing,
        }

    def open_async(self, name: str) -> Any:
        try:
            context = self.context
            import tensorstore as ts  # already imported by self.context

            return ts.open(self.spec(name), context=context, open=True, read=True)
        except ConversionError:
            raise
        except Exception as exc:  # noqa: BLE001  (spec errors come back as ValueError)
            return exc

    def finish_open(self, tree_path: TreePath, future: Any) -> ts.TensorStore:
        try:
            if isinstance(future, Exception):
                raise future
            store = future.result()
        except Exception as exc:  # noqa: BLE001  tensorstore has no error hierarchy
            raise self.damaged(tree_path, "cannot open", exc) from exc
        self.stores[tree_path] = store
        return store

    def read(self, tree_path: TreePath, store: ts.TensorStore) -> np.ndarray:
        try:
            return np.asarray(store.read().result())
        except Exception as exc:  # noqa: BLE001  tensorstore has no error hierarchy
            raise self.damaged(tree_path, "cannot read the data of", exc) from exc

    def loader(self, tree_path: TreePath, store: ts.TensorStore | DirectArray) -> Callable[[], np.ndarray]:
        name = ".".join(tree_path)

        def load() -> np.ndarray:
            if isinstance(store, DirectArray):
                check_claim(f"{self.folder}: tensor {path_str(tree_path)}", store.shape,
                            store.dtype.itemsize, self.stored_bytes(name))
                try:
                    return store.load()
                except Unreadable:  # a missing chunk, damage: tensorstore decides and names it
                    pass
            # After close() the handle is gone; reopen rather than fail.
            current = self.stores.get(tree_path)
            if current is None:
                current = self.finish_open(tree_path, self.open_async(name))
            # Absent chunks read as the fill value: bound what they may expand to by what is on disk.
            check_claim(f"{self.folder}: tensor {path_str(tree_path)}", current.shape,
                        np.dtype(current.dtype.numpy_dtype).itemsize, self.stored_bytes(name))
            return self.read(tree_path, current)

        return load

    def slicer(self, tree_path: TreePath, store: ts.TensorStore | DirectArray) -> Callable[[int], Iterator[np.ndarray]]:
        """Read the array in bands of whole read chunks along axis 0, flat, about ``max_bytes`` each.

        A band never splits a chunk: tensorstore would decompress the whole chunk for each
        part. Orbax usually writes an array as one chunk, so a band is then the whole array.
        """
        if isinstance(store, DirectArray):
            return self._direct_slicer(tree_path, store)
        shape = tuple(int(d) for d in store.shape)
        try:
            chunk_rows = int(store.chunk_layout.read_chunk.shape[0] or 0) if shape else 0
        except Exception:  # noqa: BLE001  no layout: read whole
            chunk_rows = 0
        load = self.loader(tree_path, store)

        def slices(max_bytes: int) -> Iterator[np.ndarray]:
            if not shape or chunk_rows <= 0 or chunk_rows >= shape[0]:
                yield load().reshape(-1)
                return
            row_bytes = max(1, math.prod(shape[1:]) * store.dtype.numpy_dtype.itemsize)
            band = max(chunk_rows, max_bytes // row_bytes // chunk_rows * chunk_rows)
            name = ".".join(tree_path)
            for start in range(0, shape[0], band):
                current = self.stores.get(tree_path) or self.finish_open(tree_path, self.open_async(name))
                try:
                    part = current[start:min(start + band, shape[0])].read().result()
                except Exception as exc:  # noqa: BLE001  tensorstore has no error hierarchy
                    raise self.damaged(tree_path, "cannot read the data of", exc) from exc
                yield np.asarray(part).reshape(-1)

        return slices

    def _direct_slicer(self, tree_path: TreePath, store: DirectArray) -> Callable[[int], Iterator[np.ndarray]]:
        fallback = self.loader(tree_path, None)  # tensorstore, for a band the direct reader cannot read

        def slices(max_bytes: int) -> Iterator[np.ndarray]:
            check_claim(f"{self.folder}: tensor {path_str(tree_path)}", store.shape,
                        store.dtype.itemsize, self.stored_bytes(".".join(tree_path)))
            bands, done = store.slices(max_bytes), 0
            while True:
                try:
                    part = next(bands)
                except StopIteration:
                    return
                except Unreadable:
                    break
                done += part.size
                yield part
            yield fallback().reshape(-1)[done:]

        return slices

    def close(self) -> None:
        self.stores.clear()

    def damaged(self, tree_path: TreePath, what: str, exc: Exception) -> ConversionError:
        """``CORRUPT_CHECKPOINT`` naming the tensor, for any tensorstore or file error."""
        detail = str(exc).split(" [tensorstore_spec=")[0]  # drop the long JSON echo
        return ConversionError(
            "CORRUPT_CHECKPOINT",
            f"{self.folder}: {what} tensor {path_str(tree_path)} ({detail})",
            "a data file of the checkpoint is missing or damaged (copied only in part?); "
            "copy the whole folder again or save the checkpoint again",
        )
