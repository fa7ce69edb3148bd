"""Synthetic checkpoints for the benchmarks: MLPs of any size, as Flax msgpack or Orbax.

The msgpack writer streams: it writes the exact bytes ``flax.serialization.to_bytes`` would
(checked byte for byte in tests/test_bench_smoke.py), one tensor at a time, so making a 1 GB
checkpoint needs one layer in memory, not the model twice. Arrays above ``chunk_bytes`` are
split the way Flax splits arrays above 1 GiB (``__msgpack_chunked_array__``).

Orbax checkpoints need orbax (and so jax); they are made in a child process
(``python -m bench.checkpoints orbax ...``) so the benchmark process stays small.

Example:
    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> info = write_mlp_msgpack(d / "m.msgpack", width=8, layers=2)
    >>> info["bytes"] == (d / "m.msgpack").stat().st_size, info["params"]
    (True, 144)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import msgpack
import numpy as np

FLAX_MAX_CHUNK_SIZE = 1 << 30  # flax.serialization.MAX_CHUNK_SIZE
CHUNK_MARKER = "__msgpack_chunked_array__"

Leaf = Any  # np.ndarray, a zero-argument callable returning one, or a msgpack-able scalar


# ------------------------------------------------------------------ values


def mlp_layers(width: int, layers: int) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """``(name, kernel shape, bias shape)`` of an MLP of ``layers`` Dense ``width x width``.

    Example:
        >>> mlp_layers(4, 2)
        [('Dense_0', (4, 4), (4,)), ('Dense_1', (4, 4), (4,))]
    """
    return [(f"Dense_{i}", (width, width), (width,)) for i in range(layers)]


def values(seed: int, index: int, which: str, shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic float32 weights of layer ``index`` (``which`` = kernel or bias).

    Scaled like a real initialisation so a forward pass stays finite.

    Example:
        >>> bool((values(0, 1, "kernel", (3, 3)) == values(0, 1, "kernel", (3, 3))).all())
        True
    """
    rng = np.random.default_rng([seed, index, 0 if which == "kernel" else 1])
    out = rng.standard_normal(shape, dtype=np.float32)
    out *= np.float32(1.0 / np.sqrt(shape[0]) if which == "kernel" else 0.01)
    return out


def mlp_tree(width: int, layers: int, seed: int = 0) -> dict:
    """The ``{'params': {'Dense_i': {'kernel', 'bias'}}}`` tree with lazy (callable) leaves.

    Example:
        >>> t = mlp_tree(4, 1); t["params"]["Dense_0"]["kernel"]().shape
        (4, 4)
    """
    params = {}
    for i, (name, kshape, bshape) in enumerate(mlp_layers(width, layers)):
        params[name] = {
            "kernel": lambda i=i, s=kshape: values(seed, i, "kernel", s),
            "bias": lambda i=i, s=bshape: values(seed, i, "bias", s),
        }
    return {"params": params}


def materialize(tree: dict) -> dict:
    """The same tree with every lazy leaf loaded (for Orbax or flax.serialization).

    Example:
        >>> materialize({"a": lambda: np.ones(2)})["a"].tolist()
        [1.0, 1.0]
    """
    return {k: materialize(v) if isinstance(v, dict) else (v() if callable(v) else v) for k, v in tree.items()}


# ------------------------------------------------------------------ msgpack, streamed


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x80 | n])
    return b"\xde" + struct.pack(">H", n) if n < 1 << 16 else b"\xdf" + struct.pack(">I", n)


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + struct.pack(">B", n)
    return b"\xc5" + struct.pack(">H", n) if n < 1 << 16 else b"\xc6" + struct.pack(">I", n)


def _ext_header(n: int, code: int) -> bytes:
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if n in fixed:
        head = bytes([fixed[n]])
    elif n < 1 << 8:
        head = b"\xc7" + struct.pack(">B", n)
    elif n < 1 << 16:
        head = b"\xc8" + struct.pack(">H", n)
    else:
        head = b"\xc9" + struct.pack(">I", n)
    return head + struct.pack(">b", code)


def _array_parts(array: np.ndarray, code: int = 1) -> Iterator[bytes | memoryview]:
    """ext type 1 (3 for numpy scalars) holding msgpack ``(shape, dtype name, raw bytes)``."""
    array = np.asarray(array, order="C")  # ascontiguousarray would turn a 0-d scalar into 1-d
    head = bytearray(msgpack.packb([list(array.shape), array.dtype.name], use_bin_type=True))
    head[0] = 0x93  # a 3-element array: the raw bytes follow
    head += _bin_header(array.nbytes)
    yield _ext_header(len(head) + array.nbytes, code)
    yield bytes(head)
    yield memoryview(array.reshape(-1).view(np.uint8))


def _leaf_parts(value: Any, chunk_bytes: int) -> Iterator[bytes | memoryview]:
    if isinstance(value, np.ndarray) and value.nbytes > chunk_bytes:
        # flax.serialization._chunk: flat chunks of int(MAX_CHUNK_SIZE / itemsize) elements.
        chunk = max(1, int(chunk_bytes / value.dtype.itemsize))
        flat = value.reshape(-1)
        starts = range(0, flat.size, chunk)
        yield _map_header(3)
        yield msgpack.packb(CHUNK_MARKER) + msgpack.packb(True)
        yield msgpack.packb("shape") + _map_header(value.ndim)
        for i, dim in enumerate(value.shape):
            yield msgpack.packb(str(i)) + msgpack.packb(int(dim))
        yield msgpack.packb("chunks") + _map_header(len(starts))
        for i, start in enumerate(starts):
            yield msgpack.packb(str(i))
            yield from _array_parts(flat[start:start + chunk])
    elif isinstance(value, np.ndarray):
        yield from _array_parts(value)
    elif isinstance(value, np.generic):
        yield from _array_parts(np.asarray(value), code=3)
    else:
        yield msgpack.packb(value, use_bin_type=True)


def write_flax_msgpack(path: Path, tree: dict, chunk_bytes: int = FLAX_MAX_CHUNK_SIZE,
                       on_array: Callable[[tuple[str, ...], np.ndarray], None] | None = None) -> int:
    """Write ``tree`` as ``flax.serialization.to_bytes`` would; leaves may be callables.

    Each callable leaf is called, written and dropped before the next one. ``on_array`` sees
    every array (e.g. to hash it). Returns the file size.

    Example:
        >>> import tempfile; p = Path(tempfile.mkdtemp()) / "t.msgpack"
        >>> write_flax_msgpack(p, {"params": {"w": np.zeros(2, "float32")}, "step": 3})
        41
    """
    with open(path, "wb") as handle:

        def emit(node: Any, where: tuple[str, ...]) -> None:
            if isinstance(node, dict):
                handle.write(_map_header(len(node)))
                for key, value in node.items():
                    handle.write(msgpack.packb(str(key), use_bin_type=True))
                    emit(value, (*where, str(key)))
                return
            value = node() if callable(node) else node
            if isinstance(value, np.ndarray) and on_array is not None:
                on_array(where, value)
            for part in _leaf_parts(value, chunk_bytes):
                handle.write(part)

        emit(tree, ())
        return handle.tell()


def write_mlp_msgpack(path: Path, width: int, layers: int, seed: int = 0,
                      chunk_bytes: int = FLAX_MAX_CHUNK_SIZE) -> dict:
    """A streamed MLP msgpack checkpoint; returns its size and parameter count.

    Example:
        >>> import tempfile
        >>> write_mlp_msgpack(Path(tempfile.mkdtemp()) / "m", 4, 1)["params"]
        20
    """
    size = write_flax_msgpack(Path(path), mlp_tree(width, layers, seed), chunk_bytes)
    return {"path": str(path), "bytes": size, "params": layers * (width * width + width),
            "width": width, "layers": layers}


# ------------------------------------------------------------------ child-process makers (need jax)


def _save_orbax(path: Path, tree: dict) -> None:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(Path(path).absolute(), tree)


def _save_manager(path: Path, trees: dict[int, dict]) -> None:
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(Path(path).absolute()) as manager:
        for step, tree in trees.items():
            manager.save(step, args=ocp.args.StandardSave(tree))
        manager.wait_until_finished()


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _chunked_flax(path: Path, rows: int, cols: int, seed: int, samples: int) -> dict:
    """One Dense with a (rows, cols) kernel, written by the real flax.serialization.to_bytes."""
    from flax import serialization

    kernel = values(seed, 0, "kernel", (rows, cols))
    bias = values(seed, 0, "bias", (cols,))
    rng = np.random.default_rng(seed + 1)
    flat = kernel.reshape(-1)
    picks = sorted({0, flat.size - 1, *rng.integers(0, flat.size, samples).tolist()})
    info = {
        "kernel_sha256": hashlib.sha256(memoryview(flat.view(np.uint8))).hexdigest(),
        "bias_sha256": hashlib.sha256(bias.tobytes()).hexdigest(),
        "samples": {str(i): float(flat[i]) for i in picks},
        "kernel_shape": [rows, cols], "kernel_bytes": int(kernel.nbytes),
        "chunked": bool(kernel.nbytes > serialization.MAX_CHUNK_SIZE),
    }
    data = serialization.to_bytes({"params": {"Dense_0": {"kernel": kernel, "bias": bias}}})
    del kernel, flat
    with open(path, "wb") as handle:
        handle.write(data)
    info["bytes"] = len(data)
    return info


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.checkpoints {orbax,manager,flax-chunked} PATH ...``; prints JSON info.

    ``orbax`` saves an MLP with StandardCheckpointer (``--widths`` for several at once),
    ``manager`` a CheckpointManager with ``--steps`` steps (step ``100 * (i + 1)`` holds
    seed ``i``), ``flax-chunked`` one Dense whose kernel Flax splits into 1 GiB chunks.

    Example:
        >>> main(["orbax", "/tmp/x", "--width", "8", "--layers", "2"])   # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(prog="python -m bench.checkpoints")
    parser.add_argument("kind", choices=("orbax", "manager", "flax-chunked"))
    parser.add_argument("path", type=Path)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--widths", help="orbax: comma-separated widths, one checkpoint PATH/w<width> each")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--cols", type=int, default=17920)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.kind == "orbax" and args.widths:
        # Several sizes in one process: jax and orbax are imported once.
        made = {}
        for width in (int(w) for w in args.widths.split(",")):
            target = args.path / f"w{width}"
            _save_orbax(target, materialize(mlp_tree(width, args.layers, args.seed)))
            made[str(width)] = {"path": str(target), "bytes": _folder_bytes(target),
                                "params": args.layers * (width ** 2 + width)}
        print(json.dumps(made))
        return 0
    if args.kind == "orbax":
        _save_orbax(args.path, materialize(mlp_tree(args.width, args.layers, args.seed)))
        info = {"bytes": _folder_bytes(args.path)}
    elif args.kind == "manager":
        # Step n holds the seed-n weights, so every step's output differs.
        _save_manager(args.path, {(s + 1) * 100: materialize(mlp_tree(args.width, args.layers, args.seed + s))
                                  for s in range(args.steps)})
        info = {"bytes": _folder_bytes(args.path), "steps": [(s + 1) * 100 for s in range(args.steps)]}
    else:
        info = _chunked_flax(args.path, args.rows, args.cols, args.seed, args.samples)
    info.update(path=str(args.path), params=args.layers * (args.width ** 2 + args.width)
                if args.kind != "flax-chunked" else args.rows * args.cols + args.cols)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
