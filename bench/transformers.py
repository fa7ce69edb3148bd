"""Transformers in the browser (issues 21, 22): our LayersModel and GraphModel against onnxruntime-web, paired.

MNIST CNN, ResNet-18, BERT-tiny and ViT-Ti/16 (bench/transformer_models.py) are converted by this
checkout in both formats (``--format layers-model`` and ``--format graph-model``, each checked
against JAX with ``--verify``), exported to ONNX by jax2onnx from the same checkpoints (when the
``bench`` extra is installed; bench/onnx_export.py), and timed batch 1 on the wasm backend by
bench/browser_compare.mjs in headless Chromium and in Node: interleaved blocks of 20 calls,
per-round ratios; in Node, one more call of each TF.js model runs under ``tf.profile``.
``FLAX2TFJS_BENCH_BASELINE=/path/to/older/checkout`` adds that checkout's LayersModel of the same
checkpoints (the "before" column); ``FLAX2TFJS_ORT_DIR`` points at an onnxruntime-web package
folder other than node_modules/onnxruntime-web.

    python -m bench --only transformers --merge      # this section of docs/benchmarks.md
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from bench.context import ROOT, Context
from bench.onnx_export import export
from bench.transformer_models import MODELS, write_checkpoints

COMPARE_SCRIPT = ROOT / "bench" / "browser_compare.mjs"
RUNTIMES = ("chromium", "node")


def bench_transformers(ctx: Context) -> dict:
    """Convert, export and time every model; the section's results."""
    folder = ctx.path("transformers")
    arguments = write_checkpoints(folder / "ckpt")
    baseline = os.environ.get("FLAX2TFJS_BENCH_BASELINE")
    onnx: dict[str, Path] = {}
    failures: dict[str, str] = {}
    try:
        onnx = export(folder / "ckpt", folder / "onnx", failures=failures)
        onnx_note = "jax2onnx 0.17.1"
    except ImportError as exc:
        onnx_note = f"skipped: {exc} (bash scripts/setup.sh --bench)"
    out: dict = {"onnx": onnx_note, "onnx_failures": failures, "baseline": baseline,
                 "rounds": 3 if ctx.quick else 8, "block": 20, "models": {}}
    for name in MODELS:
        ours = folder / f"{name}-tfjs"
        checkpoint = folder / "ckpt" / f"{name}.msgpack"
        graph = folder / f"{name}-graph"
        ctx.run_ok(ctx.writer(checkpoint, ours, *arguments[name], "--verify", "--samples", "4"), f"converting {name}",
                   timeout=1800)
        ctx.run_ok(ctx.writer(checkpoint, graph, *arguments[name], "--format", "graph-model", "--verify", "--samples",
                              "4"), f"converting {name} as a GraphModel", timeout=1800)
        models = {"ours": str(ours), "graph": str(graph)}
        if baseline:
            before = folder / f"{name}-baseline"
            env = {**ctx.env(), "PYTHONPATH": baseline}
            command = [ctx.python, "-m", "writer", str(checkpoint), str(before), *arguments[name], "--quiet", "--force"]
            subprocess.run(command, cwd=baseline, env=env, check=True, capture_output=True, timeout=1800)
            models["baseline"] = str(before)
        if name in onnx:
            models["ort"] = str(onnx[name])
        shown = " ".join(arguments[name]).replace(f"{ROOT}/", "")  # the module file, relative to the checkout
        entry: dict = {"command": f"python -m writer {name}.msgpack out {shown}", "runtimes": {}}
        for runtime in RUNTIMES:
            config = {"models": models, "runtime": runtime, "backend": "wasm", "rounds": out["rounds"],
                      "block": out["block"], "warmup": 5, "profile": runtime == "node"}
            ctx.log(f"transformers: {name} in {runtime}")
            result = ctx.run_ok(["node", str(COMPARE_SCRIPT), json.dumps(config)], f"{name} {runtime}", timeout=1800)
            entry["runtimes"][runtime] = json.loads(result.stdout.strip().splitlines()[-1])
        out["models"][name] = entry
    return out
