"""The ``optimize`` section of docs/benchmarks.md (reads the results dict only)."""
from __future__ import annotations

from bench.cells import markdown_table
from bench.measure import summary_from_json

RUNTIMES = {"node_wasm": "Node wasm", "chromium_wasm": "Chromium wasm"}


def _ms(data: dict | None) -> str:
    if not data or "median" not in data:
        return "–"
    s = summary_from_json(data)
    return s.fmt(1, 2 if s.median < 10 else 1, " ms")


def _ratio(data: dict) -> str:
    s = summary_from_json(data)
    return s.fmt(1, 2, "×")


def verdict(row: dict) -> str:
    """``met`` or ``MISSED`` with the measured reason, judged on the 10th-percentile ratio.

    Example:
        >>> verdict({"ratio_p10": 1.1, "p10_ms": [11.0, 10.0], "target": 1.3, "versus": "--no-optimize"})
        'MISSED (1.10× < 1.3×): the layers --optimize removes took 1.0 of 11.0 ms; the rest is spent in the layers it keeps (convolutions, Adds, pooling, Dense)'
    """
    measured = row["ratio_p10"]
    if measured >= row["target"]:
        return "met"
    why = f"MISSED ({measured:.2f}× < {row['target']:g}×)"
    if row["versus"] == "--no-optimize":
        base, opt = row["p10_ms"]
        why += (f": the layers --optimize removes took {base - opt:.1f} of {base:.1f} ms; the rest is spent in "
                "the layers it keeps (convolutions, Adds, pooling, Dense)")
    return why


def key_rows(d: dict) -> list[list[str]]:
    """Key-table rows: one per speedup target."""
    rows = []
    for row in d.get("speedups", []):
        what = (f"{row['model']}, {RUNTIMES[row['runtime']]}, batch 1: --optimize vs {row['versus']}")
        target = f"≥ {row['target']:g}× faster" if row["target"] != 1.0 else "at least as fast (≥ 1×)"
        base, opt = row["p10_ms"]
        rows.append([what, target, f"{row['ratio_p10']:.2f}× at p10 ({base:.1f} -> {opt:.1f} ms); "
                                   f"paired block medians {_ratio(row['ratio'])}", verdict(row)])
    return rows


def render(d: dict) -> list[str]:
    """Markdown lines of the section."""

    models = d["models"]
    out = ["Exact graph rewrites at conversion time (`--optimize`, the default) against the literal graph "
           "(`--no-optimize`), for a BatchNorm CNN (32×32×3) and the Flax ImageNet example's ResNet-18 "
           "(64×64×3, 1000 classes), both in `bench/optimize_models.py` with trained-looking random "
           "variables; the BN CNN also against the official converter's output for its Keras twin "
           "(`bench/keras_bn_cnn.py`: Conv2D → BatchNormalization → ReLU, as a Keras user writes it). "
           "Every model's TF.js output (Node wasm, 4 samples) is compared with JAX first.", "",
           markdown_table(["model", "converter", "layers", "rewrites", "max |TF.js − JAX|", "max |JAX|"],
                          [[label, m["converter"] + ("" if m["optimize"] is None else
                                                     " --optimize" if m["optimize"] else " --no-optimize"),
                            m["layers"], m["rewrites"], f"{m['max_abs_diff_vs_jax']:.1e}", f"{m['max_abs_jax']:.3g}"]
                           for label, m in models.items()]), "",
           "Batch-1 prediction (`model.predict` of one sample + reading it back, after warm-up), median "
           "(p10–p90) of all samples. Node: one TF.js process, "
           f"{len(next(iter(d.get('node_wasm_blocks', {}).values()), []))} blocks with the models interleaved; "
           f"Chromium: {len(next(iter(d.get('chromium_wasm_blocks', {}).values()), []))} fresh browsers "
           "(wasm without threads, as on a static host).", "",
           markdown_table(["model", *RUNTIMES.values()],
                          [[label, _ms(d.get("node_wasm", {}).get(label)), _ms(d.get("chromium_wasm", {}).get(label))]
                           for label in models]), "",
           "Speed-ups: the baseline's 10th-percentile time over the optimized model's (the runs least "
           "disturbed by the other jobs on this 2-core machine; the verdict uses it), and per block the ratio "
           "of the two medians (paired, so that load drifting between blocks cancels), median (min–max) over "
           f"blocks. Load average during the section: {d.get('load', ['?', '?'])[0]} at the start, "
           f"{d.get('load', ['?', '?'])[1]} at the end: medians carry that contention.", "",
           markdown_table(["what", "target", "measured", "verdict"], key_rows(d)), ""]
    if "skipped" in d.get("official", {}):
        out += [f"Official converter: skipped ({d['official']['skipped']}).", ""]
    return out
