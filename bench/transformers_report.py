"""The transformers section of docs/benchmarks.md (bench/transformers.py's results), without heavy imports."""
from __future__ import annotations

import statistics

from bench.cells import markdown_table


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def render(d: dict) -> list[str]:
    """The section's Markdown lines."""
    lines = ["BERT-tiny (2 layers, hidden 128, 2 heads, 128 tokens with an attention mask), ViT-Ti/16 "
             "(12 layers, hidden 192, 3 heads, 96×96), and as convolutional references the Flax MNIST example's CNN "
             "and ResNet-18 on 112×112, from bench/transformer_models.py, random weights (seed 0), batch 1, "
             "wasm backend. Each runtime loads every model once, then runs them in turn, "
             f"{d['block']} calls each, for {d['rounds']} rounds; a cell is the median over rounds of the "
             "per-call mean of a block, the ratio the median of the per-round ratios. Ours: this checkout's "
             "LayersModel (checked against JAX with `--verify`); ORT: the same checkpoint exported by "
             f"{d['onnx']}, run by onnxruntime-web 1.30 (wasm, one thread); before: "
             f"{'the same checkpoint converted by an older checkout (FLAX2TFJS_BENCH_BASELINE: the code before issue 22)' if d.get('baseline') else 'not measured'}. "
             "Target: ours / ORT ≤ 1.0×.", ""]
    rows = []
    for name, entry in d["models"].items():
        for runtime, r in entry["runtimes"].items():
            ms = {k: _median(v["block_ms"]) for k, v in r["models"].items()}
            ratios = r["ratios"]  # per round, model / ours (ours is first)
            ort = ms.get("ort")
            before = ms.get("baseline")
            ours_vs_ort = 1.0 / _median(ratios["ort"]) if "ort" in ratios else None
            rows.append([name, f"{runtime} {r['versions'].get('chromium') or r['versions'].get('node')}",
                         f"{ms['ours']:.1f} ms",
                         f"{before:.1f} ms (ours {1.0 / _median(ratios['baseline']):.2f}×)" if before else "-",
                         f"{ort:.1f} ms" if ort else "-",
                         f"**{ours_vs_ort:.2f}×**" if ours_vs_ort else "-",
                         "met" if ours_vs_ort and ours_vs_ort <= 1.0 else ("MISSED" if ours_vs_ort else "-"),
                         f"{r['load_avg'][0]:.1f} / {r['load_avg'][1]:.1f}"])
    lines += [markdown_table(["model", "runtime", "ours", "before", "ORT", "ours / ORT", "target ≤ 1.0×",
                              "load avg start / end"], rows), ""]
    lines += [f"No ORT row for {name}: jax2onnx 0.17.1 failed to export it ({why})." for name, why in
              (d.get("onnx_failures") or {}).items()] + ([""] if d.get("onnx_failures") else [])
    lines += ["Commands: " + "; ".join(f"`{e['command']}`" for e in d["models"].values()) + ".", ""]
    lines += [
        "What changed (issue 22): LayerNorm over the last axis no longer uses tfjs' `LayerNormalization` layer, "
        "which tiles mean, variance, gamma and beta to the input's shape on every call (the wasm Tile took about "
        "half of BERT-tiny's time); it is composed from layers that broadcast (topology/layers/layernorm_tilefree.py). "
        "Attention with up to 4 key/value heads runs all heads in one product (topology/layers/attention_merged.py) "
        "instead of one Dense per head and projection. Both are checked against JAX in the layer matrix.",
        "",
        "Where the rest goes: a `tf.profile` of ours after the change is dominated by `_FusedMatMul` (the Dense "
        "layers: the same multiply-adds ORT does), which tfjs 4.22's wasm backend runs several times slower than "
        "onnxruntime-web's kernels on this machine; the LayersModel format has no lever on that kernel. Closing "
        "the gap needs the GraphModel writer (fused MatMul+bias+activation, BatchMatMul over a heads axis); "
        "bench/browser_compare.mjs loads a GraphModel folder as well, so the same table can measure it.", ""]
    return lines
