"""Save one small MLP's params in every Orbax layout the reader meets, for the reader-equality tests.

Run as a script (``python -m tests.orbax_layouts FOLDER``) so that jax sees two CPU devices and
the ``sharded`` layout is a real two-device save (each device writes its own chunk).
Layouts: OCDBT float32 / bfloat16 / float16 / int8 leaves, chunked, sharded, no OCDBT, zarr3.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

LAYOUTS = ("ocdbt-f32", "ocdbt-bf16", "ocdbt-f16", "ocdbt-int8", "ocdbt-chunked", "ocdbt-sharded",
           "plain-f32", "plain-chunked", "zarr3")


def params(dtype: str = "float32") -> dict:
    """An MLP (20 -> 25 -> 10) with seeded weights, cast to ``dtype``, plus int8 extras for ``int8``."""
    import ml_dtypes
    import numpy as np

    rng = np.random.default_rng(7)
    cast = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    tree = {"Dense_0": {"kernel": rng.normal(0, 0.3, (20, 25)), "bias": rng.normal(0, 0.1, (25,))},
            "Dense_1": {"kernel": rng.normal(0, 0.3, (25, 10)), "bias": rng.normal(0, 0.1, (10,))}}
    if dtype == "int8":
        tree = {k: {n: (w * 100).clip(-127, 127).astype(np.int8) for n, w in v.items()} for k, v in tree.items()}
        return {"params": tree}
    return {"params": {k: {n: w.astype(cast) for n, w in v.items()} for k, v in tree.items()}}


def save_all(folder: Path) -> None:
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    folder.mkdir(parents=True, exist_ok=True)

    def save(name: str, tree, use_ocdbt: bool = True, use_zarr3: bool = False, chunk: int | None = None) -> None:
        handler = ocp.PyTreeCheckpointHandler(use_ocdbt=use_ocdbt, use_zarr3=use_zarr3)
        save_args = jax.tree_util.tree_map(lambda _: ocp.SaveArgs(chunk_byte_size=chunk), tree) if chunk else None
        with ocp.Checkpointer(handler) as checkpointer:
            checkpointer.save((folder / name).absolute(), args=ocp.args.PyTreeSave(tree, save_args=save_args))

    save("ocdbt-f32", params())
    save("ocdbt-bf16", params("bfloat16"))
    save("ocdbt-f16", params("float16"))
    save("ocdbt-int8", params("int8"))
    save("ocdbt-chunked", params(), chunk=256)  # the (20, 25) kernel in many chunks
    save("plain-f32", params(), use_ocdbt=False)
    save("plain-chunked", params(), use_ocdbt=False, chunk=256)
    save("zarr3", params(), use_zarr3=True)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("x",))
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    sharded = jax.tree_util.tree_map(  # rows split over 2 devices where they split evenly
        lambda w: jax.device_put(w, spec if w.shape[0] % 2 == 0 else whole), params())
    save("ocdbt-sharded", sharded)


if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    save_all(Path(sys.argv[1]))
