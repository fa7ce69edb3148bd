"""Build hostile inputs programmatically (nothing is stored in the repository).

Each builder writes one input into a given folder and returns its path. They are also used by
``python -m tests.hostile.measure`` to report peak RSS before/after (docs/troubleshooting.md).
"""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np

GiB = 1 << 30


def mlp_msgpack(path: Path) -> Path:
    """A small valid Flax msgpack MLP (Dense 8 -> 4 -> 2), written without flax."""
    import msgpack

    rng = np.random.RandomState(0)

    def arr(a: np.ndarray) -> msgpack.ExtType:
        return msgpack.ExtType(1, msgpack.packb([list(a.shape), a.dtype.name, a.tobytes()]))

    tree = {"params": {"Dense_0": {"kernel": arr(rng.randn(8, 4).astype("float32")), "bias": arr(np.zeros(4, "float32"))},
                       "Dense_1": {"kernel": arr(rng.randn(4, 2).astype("float32")), "bias": arr(np.zeros(2, "float32"))}}}
    path.write_bytes(msgpack.packb(tree))
    return path


def deep_msgpack(path: Path, depth: int = 500, nils: int = 1_000_000) -> Path:
    """``depth`` nested maps around a list of ``nils`` nils (about 1 MB)."""
    head = b"".join(b"\x81\xa1k" for _ in range(depth))
    path.write_bytes(head + b"\xdd" + nils.to_bytes(4, "big") + b"\xc0" * nils)
    return path


def npz_bomb(path: Path, inflated: int = 2 * GiB) -> Path:
    """An .npz whose one float32 member inflates to ``inflated`` bytes of zeros (deflate, ~1:230)."""
    rows = inflated // 4 // 1024
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("params/Dense_0/kernel.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (rows, 1024)})
            zeros = bytes(4 << 20)
            for _ in range(rows * 4096 // len(zeros)):
                member.write(zeros)
    return path


def npz_bytes(arrays: dict, compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def npz_members(path: Path, members: dict[str, bytes], compressed: bool = False) -> Path:
    """An archive of raw members (forged headers, duplicate names...)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def npy(shape, dtype: str, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue() + payload


def orbax_zarr(folder: Path) -> Path:
    """A real (non-OCDBT) Orbax checkpoint of a Dense 8 -> 4 -> 2 MLP, saved with orbax."""
    import orbax.checkpoint as ocp

    rng = np.random.RandomState(0)
    tree = {"params": {"Dense_0": {"kernel": rng.randn(8, 4).astype("float32"), "bias": np.zeros(4, "float32")},
                       "Dense_1": {"kernel": rng.randn(4, 2).astype("float32"), "bias": np.zeros(2, "float32")}},
            "step": 3}
    ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False)).save(
        folder.absolute(), args=ocp.args.PyTreeSave(tree))
    return folder


def orbax_huge_claim(base: Path, folder: Path, claimed_bytes: int = 6 * GiB) -> Path:
    """A copy of ``base`` whose Dense_0 kernel .zarray claims ``claimed_bytes`` and whose chunks are gone
    (as an older Orbax writes it: chunks equal to the fill value are skipped, so absent chunks read as zeros)."""
    shutil.copytree(base, folder)
    top = json.loads((folder / "_METADATA").read_text())
    top.pop("store_array_data_equal_to_fill_value", None)
    (folder / "_METADATA").write_text(json.dumps(top))
    array = folder / "params.Dense_0.kernel"
    meta = json.loads((array / ".zarray").read_text())
    rows = claimed_bytes // 4 // 4
    meta["shape"] = [rows, 4]
    meta["chunks"] = [rows, 4]
    (array / ".zarray").write_text(json.dumps(meta))
    for chunk in array.iterdir():
        if not chunk.name.startswith("."):
            chunk.unlink()
    return folder


def orbax_escaping(base: Path, folder: Path, outside: Path) -> Path:
    """A copy of ``base`` whose _METADATA names Dense_0's kernel by an absolute path to ``outside``
    (a real zarr array folder outside the checkpoint)."""
    shutil.copytree(base, folder)
    shutil.copytree(base / "params.Dense_0.kernel", outside)
    meta = json.loads((folder / "_METADATA").read_text())
    for key, entry in list(meta["tree_metadata"].items()):
        if "Dense_0" in key and "kernel" in key:
            entry["key_metadata"] = [{"key": str(outside), "key_type": 2}]
    (folder / "_METADATA").write_text(json.dumps(meta))
    return folder


def _msgpack_array(a: np.ndarray):
    import msgpack

    return msgpack.ExtType(1, msgpack.packb([list(a.shape), a.dtype.name, a.tobytes()]))


def nil_list_msgpack(path: Path, nils: int = 9_900_000) -> Path:
    """One map ``params`` -> a list of ``nils`` nils (9.4 MB for 9.9 million)."""
    path.write_bytes(b"\x81\xa6params" + b"\xdd" + nils.to_bytes(4, "big") + b"\xc0" * nils)
    return path


def many_dense_msgpack(path: Path, layers: int = 60_000) -> Path:
    """A Flax msgpack of ``layers`` chained Dense(1) layers (1x1 kernel and bias each; 3.8 MB for 60,000)."""
    import msgpack

    rng = np.random.RandomState(0)
    params = {}
    for i in range(layers):
        params[f"Dense_{i}"] = {"bias": _msgpack_array(rng.randn(1).astype("float32") * 0.01),
                                "kernel": _msgpack_array(np.ones((1, 1), "float32") + rng.randn(1, 1).astype("float32") * 0.001)}
    path.write_bytes(msgpack.packb({"params": params}))
    return path


def npz_shared_member(path: Path, names: int = 60_000) -> Path:
    """An .npz whose ``names`` central-directory entries all point at one small member's bytes."""
    import struct

    data = npz_bytes({"params/Dense_0/kernel": np.ones((4, 4), "float32")})
    eocd = data.rindex(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack("<II", data[eocd + 12:eocd + 20])
    record = data[cd_offset:cd_offset + cd_size]
    name_len = struct.unpack("<H", record[28:30])[0]
    fixed, extra = record[:46], record[46 + name_len:]
    entries = []
    for i in range(names):
        name = f"params/L{i:07d}/kernel.npy".encode()
        entries.append(fixed[:28] + struct.pack("<H", len(name)) + fixed[30:] + name + extra)
    central = b"".join(entries)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, names, names, len(central), cd_offset, 0)
    path.write_bytes(data[:cd_offset] + central + end)
    return path


def repeated_array_msgpack(path: Path, count: int = 1_000_000) -> Path:
    """``params`` -> a list of ``count`` copies of one tiny array leaf (14 bytes each: 14 MB for a million)."""
    import msgpack

    path.write_bytes(msgpack.packb({"params": [_msgpack_array(np.zeros((), "uint8"))] * count}))
    return path


def orbax_many_absent_leaves(base: Path, folder: Path, leaves: int = 60_000) -> Path:
    """A copy of ``base`` whose _METADATA lists ``leaves`` arrays that have no folder (13.8 MB for 60,000)."""
    shutil.copytree(base, folder)
    meta = json.loads((folder / "_METADATA").read_text())
    entry = next(iter(meta["tree_metadata"].values()))
    tree = {}
    for i in range(leaves):
        keys = [{"key": "params", "key_type": 2}, {"key": f"L{i}", "key_type": 2}, {"key": "kernel", "key_type": 2}]
        tree[f"('params', 'L{i}', 'kernel')"] = {**entry, "key_metadata": keys}
    meta["tree_metadata"] = tree
    (folder / "_METADATA").write_text(json.dumps(meta))
    return folder
