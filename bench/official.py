"""The official converter side by side: ``tensorflowjs_converter`` on the Keras twin of the MNIST CNN.

The official route cannot read a Flax checkpoint at all (its JAX path needs
``jax2tf.convert(enable_xla=False)``, gone from current JAX), so the fairest comparison is
its cheapest path: an already-built Keras H5 with the same weights -> LayersModel. Its
wall time and peak RSS are those of the whole ``tensorflowjs_converter`` process, like ours.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.context import OFFICIAL_CONVERTER, OFFICIAL_PYTHON, ROOT, Context, folder_bytes, remove
from bench.conversion import MNIST_CKPT
from bench.measure import summarize

KERAS_SCRIPT = ROOT / "bench" / "keras_mnist.py"
MODES = {"float32": [], "uint8": ["--quantize_uint8", "*"]}


def export_mnist_params(target: Path) -> Path:
    """Write the MNIST checkpoint's params as ``<Layer>/<weight>`` arrays in an .npz (numpy only).

    Example:
        >>> export_mnist_params(Path("/tmp/p.npz")).name                # doctest: +SKIP
        'p.npz'
    """
    from writer.readers import read_checkpoint

    with read_checkpoint(MNIST_CKPT) as checkpoint:
        arrays = {"/".join(path[1:]): ref.load() for path, ref in checkpoint.tensors.items() if path[0] == "params"}
    np.savez(target, **arrays)
    return target


def bench_official(ctx: Context) -> dict:
    """Time ``tensorflowjs_converter`` (float32 and uint8); keep its outputs for the latency section.

    Returns ``{"skipped": why}`` when .venv-tfjs is missing.
    """
    if not OFFICIAL_PYTHON.exists() or not OFFICIAL_CONVERTER.exists():
        return {"skipped": f"{OFFICIAL_PYTHON} not found (see /work/shared/MISSION.md for the pinned install)"}
    ctx.log("official converter: building the Keras twin of the MNIST CNN in .venv-tfjs")
    params = export_mnist_params(ctx.path("mnist_params.npz"))
    h5 = ctx.path("mnist_keras.h5")
    info = json.loads(ctx.run_ok([str(OFFICIAL_PYTHON), str(KERAS_SCRIPT), str(params), str(h5)],
                                 "building the Keras model", timeout=600).stdout.strip().splitlines()[-1])
    out: dict = {"versions": info, "h5_bytes": info["h5_bytes"], "modes": {}, "outputs": {}}
    for mode, flags in MODES.items():
        runs = []
        target = None
        for i in range(ctx.runs(5)):
            target = ctx.path(f"official-{mode}")
            cmd = [str(OFFICIAL_CONVERTER), "--input_format", "keras", "--output_format", "tfjs_layers_model",
                   *flags, str(h5), str(target)]
            ctx.log(f"official converter {mode} run {i + 1}")
            runs.append(ctx.run_ok(cmd, "tensorflowjs_converter", timeout=600))
        out["modes"][mode] = {
            "command": " ".join(["tensorflowjs_converter", *cmd[1:-2], "model.h5", "out/"]),
            "wall_s": summarize([r.seconds for r in runs]).to_json(),
            "peak_rss_bytes": summarize([r.peak_rss for r in runs]).to_json(),
            "output_bytes": folder_bytes(target),
        }
        out["outputs"][mode] = str(target)  # kept for the TF.js section; deleted with the scratch folder
    remove(params)
    return out
