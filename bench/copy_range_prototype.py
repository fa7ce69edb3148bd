"""Prototype of a kernel-copy fast path for float32 msgpack weights, to measure what it would gain.

    python -m bench.copy_range_prototype CKPT.msgpack OUT_DIR

Every float32 array of a Flax msgpack file is stored as raw little-endian bytes, exactly what
a tfjs shard holds. This prototype does what the writer could do for such weights: check them
for NaN/Inf through one reused 4 MiB buffer, then let the kernel copy the byte range into
4 MiB shard files (``os.copy_file_range``), so the weights never pass through user space.
It writes only the shards (no model.json) and is not part of the converter; the benchmark
times it next to the real conversion. Uses the reader's private header walker.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

SHARD = 4 * 1024 * 1024


def copy_weights(checkpoint: Path, out_dir: Path) -> int:
    """Check and kernel-copy every float32 array of ``checkpoint`` into shards; returns bytes copied.

    Example:
        >>> copy_weights(Path("m.msgpack"), Path("out"))          # doctest: +SKIP
        1073872896
    """
    from writer.readers.flax_msgpack import _Array, _Walker

    with open(checkpoint, "rb", buffering=0) as handle:
        records = _Walker(handle, os.fstat(handle.fileno()).st_size, checkpoint).walk()
    arrays = [r for r in records if isinstance(r, _Array) and r.dtype == np.dtype("<f4")]
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = np.empty(SHARD // 4, np.float32)
    view = memoryview(buffer).cast("B")
    source = os.open(checkpoint, os.O_RDONLY)
    shard, room, index, total = -1, 0, 0, 0
    try:
        for array in arrays:
            for offset, length in array.pieces:
                for start in range(offset, offset + length, SHARD):  # the check, on a reused buffer
                    n = min(SHARD, offset + length - start)
                    if os.preadv(source, [view[:n]], start) != n or not np.isfinite(buffer[:n // 4]).all():
                        raise ValueError(f"short read or NaN/Inf in {'/'.join(array.path)}")
                position = offset
                while position < offset + length:  # the copy, shard by shard
                    if room == 0:
                        if shard >= 0:
                            os.close(shard)
                        shard = os.open(out_dir / f"group1-shard{index + 1}.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                        index, room = index + 1, SHARD
                    n = os.copy_file_range(source, shard, min(room, offset + length - position), position)
                    if n <= 0:
                        raise ValueError("copy_file_range copied nothing")
                    position, room, total = position + n, room - n, total + n
    finally:
        os.close(source)
        if shard >= 0:
            os.close(shard)
    return total


if __name__ == "__main__":
    print(copy_weights(Path(sys.argv[1]), Path(sys.argv[2])))
