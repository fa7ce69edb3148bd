"""TF.js side: size and accuracy per quantization mode, and inference latency in Node and Chromium.

Accuracy is measured in real TF.js (Node, cpu backend) on the 2,000 held-out real MNIST digits
of examples/mnist_data.py, against the Flax model's own accuracy computed here in JAX.
Latency: ``model.predict`` plus reading the output back (``await data()``), after warm-up, on
a fresh model load per repeat block; Node through writer/tfjs_node.py, Chromium through
bench/browser_latency.mjs.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from bench.context import ROOT, Context, folder_bytes
from bench.conversion import MNIST_CKPT
from bench.measure import summarize

QUANTIZE_MODES = [None, "float16", "uint16", "uint8"]
BATCHES = [1, 32]
BROWSER_SCRIPT = ROOT / "bench" / "browser_latency.mjs"


def flax_logits(x: np.ndarray) -> np.ndarray:
    """Logits of the checkpoint's CNN in JAX/Flax: the reference for accuracy and agreement."""
    import jax
    import orbax.checkpoint as ocp

    from examples.train_mnist import mnist_cnn_apply

    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(MNIST_CKPT.absolute())["params"]
    apply = jax.jit(mnist_cnn_apply)
    return np.concatenate([np.asarray(apply(params, x[i:i + 500])) for i in range(0, len(x), 500)])


def bench_tfjs(ctx: Context, official: dict | None = None, browser: bool = True) -> dict:
    """Convert MNIST in every quantization mode; accuracy, size, Node and Chromium latency.

    ``official`` (the result of bench/official.py) adds the official converter's outputs to
    the accuracy and latency tables.
    """
    from examples.mnist_data import load_mnist
    from writer.tfjs_node import TfjsRunner

    _, _, x_test, y_test = load_mnist()
    if ctx.quick:
        x_test, y_test = x_test[:200], y_test[:200]
    ctx.log(f"TF.js: Flax reference on {len(x_test)} digits")
    reference = flax_logits(x_test)
    flax_pred = reference.argmax(1)
    models: dict[str, dict] = {}
    for mode in QUANTIZE_MODES:
        name = f"flax2tfjs-{mode or 'float32'}"
        target = ctx.path(name)
        ctx.run_ok(ctx.writer(MNIST_CKPT, target, *(["--quantize", mode] if mode else [])), f"converting {name}")
        models[name] = {"dir": target, "converter": "flax2tfjs", "quantize": mode or "float32"}
    for mode, path in ((official or {}).get("outputs") or {}).items():
        models[f"official-{mode}"] = {"dir": Path(path), "converter": "tensorflowjs_converter", "quantize": mode}

    variants = []
    node_rows = []
    latency_models = [n for n in models if n.endswith(("float32", "uint8"))]
    if ctx.quick:
        latency_models = latency_models[:1]
    with TfjsRunner(timeout=600) as tfjs:
        ctx.log("TF.js: accuracy per model (Node, wasm)")
        for name, model in models.items():
            # wasm: the same numbers as cpu to ~1e-6, and 20x faster on 2,000 digits.
            result = tfjs.predict(model["dir"], x_test, backend="wasm")
            logits = result.outputs[0]
            pred = logits.argmax(1)
            variants.append({
                "model": name, "converter": model["converter"], "quantize": model["quantize"],
                "bytes": folder_bytes(model["dir"]),
                "weight_bytes": sum(p.stat().st_size for p in model["dir"].glob("*.bin")),
                "accuracy": float((pred == y_test).mean()), "n": int(len(y_test)),
                "agreement_with_flax": float((pred == flax_pred).mean()),
                "max_abs_logit_diff_vs_flax": float(np.max(np.abs(logits.astype(np.float64) - reference))),
            })
        calls = 1 if ctx.quick else 3
        for name in latency_models:
            for backend in ("cpu", "wasm"):
                for batch in BATCHES:
                    # The cpu backend needs ~0.5 s per batch of 32: fewer repeats there.
                    repeat = 3 if ctx.quick else (10 if backend == "cpu" and batch > 1 else 30)
                    ctx.log(f"TF.js Node latency: {name} {backend} batch {batch}")
                    x = np.ascontiguousarray(x_test[:batch])
                    samples, loads = [], []
                    for _ in range(calls):
                        result = tfjs.predict(models[name]["dir"], x, backend=backend, repeat=repeat + 2)
                        samples += result.predict_ms[2:]  # first two calls warm up kernels and caches
                        loads.append(result.load_ms)
                    node_rows.append({"model": name, "backend": backend, "batch": batch,
                                      "predict_ms": summarize(samples).to_json(),
                                      "load_ms": summarize(loads).to_json()})
        node_version = tfjs.request({"cmd": "version"})
    out = {"digits": int(len(y_test)), "flax_accuracy": float((flax_pred == y_test).mean()),
           "variants": variants, "node": {"versions": node_version, "rows": node_rows, "calls": calls}}
    if browser:
            out["chromium"] = _chromium(ctx, {n: models[n]["dir"] for n in latency_models})
    else:
        out["chromium"] = {"skipped": "quick mode (run without --quick, or pass --browser)"}
    return out


def _chromium(ctx: Context, models: dict[str, Path]) -> dict:
    if not shutil.which("node") or not Path("/usr/bin/chromium").exists():
        return {"skipped": "node or /usr/bin/chromium missing (apt-get install -y chromium)"}
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        return {"skipped": "node_modules/playwright-core missing (npm ci)"}
    config = {"models": {n: str(p) for n, p in models.items()}, "backends": ["cpu", "wasm", "webgl"],
              "batches": BATCHES, "warmup": 3 if ctx.quick else 5, "repeat": 5 if ctx.quick else 30,
              "budget_ms": 2000 if ctx.quick else 8000, "min_repeat": 5 if ctx.quick else 10}
    rows = []
    meta = {}
    blocks = 1 if ctx.quick else 3
    for block in range(blocks):  # a fresh browser per block: load effects average out
        ctx.log(f"TF.js Chromium latency, block {block + 1}")
        result = ctx.run_ok(["node", str(BROWSER_SCRIPT), json.dumps(config)], "Chromium latency", timeout=1800)
        data = json.loads(result.stdout.strip().splitlines()[-1])
        meta = {k: v for k, v in data.items() if k != "results"}
        rows += data["results"]
    merged: dict[tuple, dict] = {}
    for row in rows:
        key = (row["model"], row["backend"], row["batch"])
        entry = merged.setdefault(key, {"samples": [], "loads": [], "diff": 0.0})
        entry["samples"] += row["predict_ms"]
        entry["loads"].append(row["load_ms"])
        if row["max_abs_diff_vs_cpu"] is not None:
            entry["diff"] = max(entry["diff"], row["max_abs_diff_vs_cpu"])
    return {"versions": meta, "blocks": blocks, "warmup": config["warmup"], "rows": [
        {"model": m, "backend": b, "batch": n, "predict_ms": summarize(e["samples"]).to_json(),
         "load_ms": summarize(e["loads"]).to_json(), "max_abs_diff_vs_cpu": e["diff"]}
        for (m, b, n), e in merged.items()]}
