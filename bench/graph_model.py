"""GraphModel vs LayersModel latency: the same weights written both ways, batch 1, Node wasm
(and Chromium wasm with ``--browser``), in paired blocks.

    python -m bench.graph_model                 # MNIST CNN, ResNet-18, BERT-tiny, ViT-Ti; ~10 min on 2 cores
    python -m bench.graph_model --quick         # 1 block, 3 runs: a smoke test
    python -m bench.graph_model --browser       # also headless Chromium (bench/browser_latency.mjs)

Models (random weights; latency does not depend on their values): the Flax MNIST example's CNN
(28x28x1), the bench's ResNet-18 (64x64x3, BatchNorm), a BERT-tiny (2 layers, hidden 128, 2 heads,
sequence 128, attention mask and token types) and a ViT-Ti-sized ViT (12 layers, hidden 192, 96x96
input, 8x8 patches). Each is converted with ``format="layers-model"`` and ``format="graph-model"``;
both are first compared with JAX. Then, per block, each model runs ``repeat`` times in each
format, interleaved, so that machine load drifting between blocks hits both alike; the ratio is
taken per block (layers median / graph median) and summarised over blocks. The results go to
bench/results/graph_model.json and the table in docs/graph-model.md (between its bench markers).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "graph_model.json"
DOC = ROOT / "docs" / "graph-model.md"
BROWSER_SCRIPT = ROOT / "bench" / "browser_latency.mjs"


def _models(quick: bool) -> dict:
    from bench.optimize_models import ResNet18
    from examples.models.bert_classifier import BertClassifier
    from examples.models.vit import ViT
    from examples.train_mnist import CNN

    if quick:
        return {"mnist": (CNN(), [((28, 28, 1), "float32")])}
    return {
        "mnist": (CNN(), [((28, 28, 1), "float32")]),
        "resnet18": (ResNet18(), [((64, 64, 3), "float32")]),
        "bert-tiny": (BertClassifier(vocab=1000, dim=128, heads=2, layers=2, max_positions=128, classes=2),
                      [((128,), "int32"), ((128,), "int32"), ((128,), "int32")]),
        "vit-ti": (ViT(num_layers=12, hidden_size=192), [((96, 96, 3), "float32")]),
    }


def _inputs(specs: list, batch: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for i, (shape, dtype) in enumerate(specs):
        if dtype == "int32":  # ids, an attention mask of ones, token types of zeros
            arrays.append(rng.integers(0, 1000, (batch, *shape)).astype("int32") if i == 0
                          else np.full((batch, *shape), 1 if i == 1 else 0, "int32"))
        else:
            arrays.append(rng.uniform(0, 1, (batch, *shape)).astype("float32"))
    return arrays


def _variables(module, xs: list[np.ndarray]):
    import jax

    rng = np.random.default_rng(7)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *xs)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "var":
            return rng.uniform(0.5, 2.0, leaf.shape).astype(leaf.dtype)
        return (rng.standard_normal(leaf.shape) * 0.05).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def run(quick: bool, browser: bool, log=print) -> dict:
    from writer import to_tensorflowjs
    from writer.tfjs_node import TfjsRunner

    scratch = Path(tempfile.mkdtemp(prefix="f2t-bench-graph-"))
    models, converted = _models(quick), {}
    for name, (module, specs) in models.items():
        xs = _inputs(specs, 1)
        variables = _variables(module, xs)
        expected = np.asarray(module.apply(variables, *xs))
        shapes = [s for s, _ in specs]
        for fmt in ("layers-model", "graph-model"):
            log(f"graph_model bench: converting {name} as {fmt}")
            started = time.perf_counter()
            report = to_tensorflowjs(module, scratch / f"{name}-{fmt}", variables=variables,
                                     input_shape=shapes if len(shapes) > 1 else shapes[0],
                                     input_dtype=[d for _, d in specs] if len(specs) > 1 else specs[0][1], format=fmt)
            converted[(name, fmt)] = {"dir": scratch / f"{name}-{fmt}", "xs": xs, "expected": expected,
                                      "convert_s": round(time.perf_counter() - started, 2),
                                      "nodes_or_layers": len(report.layers), "bytes": report.bytes_written}
    blocks, repeat = (1, 3) if quick else (6, 15)
    samples = {key: [] for key in converted}
    medians = {key: [] for key in converted}
    with TfjsRunner(timeout=900) as tfjs:
        for key, info in converted.items():
            got = tfjs.predict(info["dir"], info["xs"], backend="wasm").outputs[0]
            info["max_abs_diff_vs_jax"] = float(np.max(np.abs(got.astype(np.float64) - info["expected"])))
        for block in range(blocks):
            log(f"graph_model bench: Node wasm block {block + 1} of {blocks}")
            for key, info in converted.items():
                times = tfjs.predict(info["dir"], info["xs"], backend="wasm", repeat=repeat + 3).predict_ms[3:]
                samples[key] += times
                medians[key].append(float(np.median(times)))
        versions = tfjs.request({"cmd": "version"})
    out: dict = {"versions": versions, "blocks": blocks, "repeat": repeat, "models": {}}
    for name in models:
        layers, graph = converted[(name, "layers-model")], converted[(name, "graph-model")]
        ratios = [a / b for a, b in zip(medians[(name, "layers-model")], medians[(name, "graph-model")])]
        out["models"][name] = {
            "layers_ms": statistics.median(samples[(name, "layers-model")]),
            "graph_ms": statistics.median(samples[(name, "graph-model")]),
            "speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
            "max_abs_diff_vs_jax": {"layers": layers["max_abs_diff_vs_jax"], "graph": graph["max_abs_diff_vs_jax"]},
            "bytes": {"layers": layers["bytes"], "graph": graph["bytes"]},
        }
    if browser:
        out["chromium_wasm"] = _chromium({f"{n}-{f}": str(i["dir"]) for (n, f), i in converted.items()}, quick, log)
    return out


def _chromium(dirs: dict[str, str], quick: bool, log) -> dict:
    config = {"models": dirs, "backends": ["wasm"], "batches": [1], "warmup": 3, "repeat": 5 if quick else 20,
              "budget_ms": 4000, "min_repeat": 5 if quick else 10}
    rows: dict[str, list[float]] = {}
    for block in range(1 if quick else 3):
        log(f"graph_model bench: Chromium wasm block {block + 1}")
        result = subprocess.run(["node", str(BROWSER_SCRIPT), json.dumps(config)], capture_output=True, text=True,
                                timeout=3600, cwd=ROOT)
        if result.returncode != 0:
            return {"skipped": result.stderr.strip()[-400:]}
        for row in json.loads(result.stdout.strip().splitlines()[-1])["results"]:
            rows.setdefault(row["model"], []).append(float(np.median(row["predict_ms"])))
    return {name: statistics.median(medians) for name, medians in rows.items()}


def table(results: dict) -> str:
    """The markdown table of docs/graph-model.md."""
    chromium = results.get("chromium_wasm", {})
    lines = ["| model | LayersModel (Node wasm) | GraphModel (Node wasm) | speed-up (per-block median, range) "
             "| Chromium wasm: layers / graph | max abs diff vs JAX (layers / graph) |", "|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        browser = (f"{chromium[name + '-layers-model']:.1f} / {chromium[name + '-graph-model']:.1f} ms"
                   if f"{name}-graph-model" in chromium else "not measured")
        lines.append(f"| {name} | {r['layers_ms']:.2f} ms | {r['graph_ms']:.2f} ms | {r['speedup_median']:.2f}x "
                     f"({r['speedup_min']:.2f}-{r['speedup_max']:.2f}) | {browser} | "
                     f"{r['max_abs_diff_vs_jax']['layers']:.1e} / {r['max_abs_diff_vs_jax']['graph']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.graph_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--browser", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.quick, args.browser, log=lambda m: print(m, file=sys.stderr))
    print(table(results))
    if not args.quick:
        RESULTS.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        doc = DOC.read_text(encoding="utf-8")
        start, end = "<!-- bench:start -->\n", "\n<!-- bench:end -->"
        if start in doc:
            head, rest = doc.split(start, 1)
            DOC.write_text(head + start + table(results) + rest[rest.index(end):], encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
