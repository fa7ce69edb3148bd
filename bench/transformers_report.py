"""The transformers section of docs/benchmarks.md (bench/transformers.py's results), without heavy imports."""
from __future__ import annotations

import statistics

from bench.cells import markdown_table

TARGET = 1.0  # issue 22: ours / onnxruntime-web at most this, in at least one of the two formats


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _paired(r: dict, a: str, b: str) -> float | None:
    """Median over rounds of block(a) / block(b): the same round's blocks, so a slow moment cancels."""
    if a not in r["models"] or b not in r["models"]:
        return None
    return _median([x / y for x, y in zip(r["models"][a]["block_ms"], r["models"][b]["block_ms"])])


def _ratio_cell(value: float | None) -> str:
    return f"**{value:.2f}×**" if value is not None else "-"


def _agreement(r: dict) -> str:
    """Largest difference between the first output values of ORT and of each of our formats (same inputs)."""
    outputs = {k: v.get("output") or [] for k, v in r["models"].items()}
    ort = outputs.get("ort")
    if not ort:
        return "-"
    diffs = [max(abs(a - b) for a, b in zip(outputs[k], ort)) for k in ("ours", "graph") if outputs.get(k)]
    return f"{max(diffs):.1e}" if diffs else "-"


def _rate(o: dict) -> str:
    """``, 8.4 M multiply-adds, 1.2 G/s`` for a matrix product with a time, else ''."""
    if not o.get("macs") or o["ms"] <= 0:
        return ""
    return f", {o['macs'] / 1e6:.1f} M multiply-adds, {o['macs'] / o['ms'] / 1e6:.1f} G/s"


def _top_ops(profile: dict, count: int) -> str:
    return ", ".join(f"`{o['op']}` {o['ms']:.1f} ms ({o['calls']}×{_rate(o)})" for o in profile["top"][:count])


def _reasons(d: dict, missed: set[str]) -> list[str]:
    """Per model above the target: the GraphModel's largest op in Node wasm and its share of the kernel time."""
    lines = []
    for name, entry in d["models"].items():
        profile = entry["runtimes"].get("node", {}).get("models", {}).get("graph", {}).get("profile")
        if name not in missed or not profile or not profile["top"]:
            continue
        top = profile["top"][0]
        products = {o["op"]: o for o in profile["top"] if o.get("macs") and o["ms"] > 0}
        wall = _median(entry["runtimes"]["node"]["models"]["graph"]["block_ms"])
        line = (f"- {name}: `{top['op']}` takes {top['ms']:.1f} of the GraphModel's {profile['kernel_ms']:.1f} ms "
                f"of kernel time, in {profile['kernels']} kernels a call; a whole Node call in the table takes "
                f"{wall:.1f} ms, so {max(wall - profile['kernel_ms'], 0):.1f} ms go outside kernels (the graph "
                f"executor's work per op, the inputs, reading the output back, waiting for a core when the "
                f"machine is loaded)")
        ort_blocks = entry["runtimes"]["node"]["models"].get("ort", {}).get("block_ms")
        if ort_blocks:  # the floor: our kernels alone against ORT's whole call
            ort = _median(ort_blocks)
            line += (f"; onnxruntime-web's whole Node call takes {ort:.1f} ms, so "
                     + (f"the kernels alone already take {profile['kernel_ms'] / ort:.2f}× of it: TF.js 4.22's wasm "
                        f"kernels themselves are slower" if profile['kernel_ms'] > ort else
                        f"the kernels alone take {profile['kernel_ms'] / ort:.2f}× of it: the rest is per-op work"))
        if "BatchMatMul" in products and "_FusedMatMul" in products:
            b, f = products["BatchMatMul"], products["_FusedMatMul"]
            line += (f"; `BatchMatMul` does {b['macs'] / 1e6:.1f} M multiply-adds at "
                     f"{b['macs'] / b['ms'] / 1e6:.1f} G/s, `_FusedMatMul` {f['macs'] / 1e6:.1f} M at "
                     f"{f['macs'] / f['ms'] / 1e6:.1f} G/s")
        lines.append(line + ".")
    return lines


def _rows(d: dict) -> tuple[list[list[str]], list[str], list[tuple[str, str, float]]]:
    """Table rows, header, and (model, runtime, best ratio) for the verdict text."""
    baseline = bool(d.get("baseline"))
    header = ["model", "runtime", "LayersModel", "GraphModel", *(["before"] if baseline else []), "ORT",
              "layers / ORT", "graph / ORT", f"target ≤ {TARGET:.1f}× (either)", "max abs diff vs ORT",
              "load avg start / end"]
    rows, best = [], []
    for name, entry in d["models"].items():
        for runtime, r in entry["runtimes"].items():
            ms = {k: _median(v["block_ms"]) for k, v in r["models"].items()}
            layers_vs_ort, graph_vs_ort = _paired(r, "ours", "ort"), _paired(r, "graph", "ort")
            measured = [v for v in (layers_vs_ort, graph_vs_ort) if v is not None]
            verdict = "-" if not measured else ("met" if min(measured) <= TARGET else "MISSED")
            if measured:
                best.append((name, runtime, min(measured)))
            before = (f"{ms['baseline']:.1f} ms" if "baseline" in ms else "-")
            rows.append([name, f"{runtime} {r['versions'].get('chromium') or r['versions'].get('node')}",
                         f"{ms['ours']:.1f} ms", f"{ms['graph']:.1f} ms" if "graph" in ms else "-",
                         *([before] if baseline else []), f"{ms['ort']:.1f} ms" if "ort" in ms else "-",
                         _ratio_cell(layers_vs_ort), _ratio_cell(graph_vs_ort), verdict, _agreement(r),
                         f"{r['load_avg'][0]:.1f} / {r['load_avg'][1]:.1f}"])
    return rows, header, best


def _profiles(d: dict) -> list[str]:
    """One line per model: where a Node wasm call of each format spends its kernel time."""
    lines = []
    for name, entry in d["models"].items():
        node = entry["runtimes"].get("node", {}).get("models", {})
        parts = []
        for key, label in (("graph", "GraphModel"), ("ours", "LayersModel")):
            profile = node.get(key, {}).get("profile")
            if profile:
                parts.append(f"{label} {profile['kernel_ms']:.1f} ms in {profile['kernels']} kernels: "
                             f"{_top_ops(profile, 4 if key == 'graph' else 3)}")
        if parts:
            lines.append(f"- {name}: " + "; ".join(parts) + ".")
    return lines


def render(d: dict) -> list[str]:
    """The section's Markdown lines."""
    lines = ["BERT-tiny (2 layers, hidden 128, 2 heads, 128 tokens with an attention mask), ViT-Ti/16 "
             "(12 layers, hidden 192, 3 heads, 96×96), and as convolutional references the Flax MNIST example's CNN "
             "and ResNet-18 on 112×112, from bench/transformer_models.py, random weights (seed 0), batch 1, "
             "wasm backend. Each runtime loads every model once, then runs them in turn, "
             f"{d['block']} calls each, for {d['rounds']} rounds; a cell is the median over rounds of the "
             "per-call mean of a block, a ratio the median of the per-round ratios (blocks of the same round). "
             "LayersModel and GraphModel: this checkout's conversions of the same checkpoint with "
             "`--format layers-model` and `--format graph-model` (each checked against JAX with `--verify`); ORT: "
             f"the same checkpoint exported by {d['onnx']} (bench/onnx_export.py), run by onnxruntime-web 1.30 "
             "(wasm, one thread); before: "
             f"{'the same checkpoint converted by an older checkout (FLAX2TFJS_BENCH_BASELINE)' if d.get('baseline') else 'not measured'}. "
             "Max abs diff vs ORT: the largest difference between ORT's first 8 output values and either format's, "
             "on the same inputs (the yardstick runs the same model). "
             f"Target (issue 22): ours / ORT ≤ {TARGET:.1f}× in at least one of the two formats.", "",
             "Made by one command, `python -m bench --only transformers --merge` (checkpoints, both conversions, "
             "the ONNX export, both runtimes, this section; about 5 min on 2 cores; onnxruntime-web from "
             "node_modules, or the package folder named by `FLAX2TFJS_ORT_DIR`).", ""]
    rows, header, best = _rows(d)
    lines += [markdown_table(header, rows), ""]
    lines += [f"No ORT row for {name}: jax2onnx 0.17.1 failed to export it ({why})." for name, why in
              (d.get("onnx_failures") or {}).items()] + ([""] if d.get("onnx_failures") else [])
    lines += ["Commands: " + "; ".join(f"`{e['command']}`" for e in d["models"].values())
              + "; the GraphModel is the same command with `--format graph-model`.", ""]
    lines += [
        "jax2onnx workarounds (bench/onnx_export.py, bench-only): jax2onnx 0.17.1 replaces `flax.linen.max_pool` "
        "while tracing by a function that takes the window only by keyword, so a plain Flax ResNet "
        "(`nn.max_pool(x, (3, 3), ...)`) fails with a TypeError; an adapter forwards the window by keyword. "
        "onnxruntime then rejected the intermediate `value_info` shapes jax2onnx declared (\"Can't merge shape "
        "info\"); they are shape annotations only and are removed, ORT infers them itself. The table's max abs "
        "diff column shows the exported ResNet computes what ours does.", ""]
    met = [f"{n} ({rt}, {v:.2f}×)" for n, rt, v in best if v <= TARGET]
    missed = [f"{n} ({rt}, best {v:.2f}×)" for n, rt, v in best if v > TARGET]
    lines += ["Verdict: " + (f"at or below {TARGET:.1f}× ORT in one of the formats: {', '.join(met)}. " if met else "")
              + (f"Above {TARGET:.1f}× ORT in both formats: {', '.join(missed)}." if missed
                 else "Every measured row meets the target."), ""]
    reasons = _reasons(d, {n for n, _, v in best if v > TARGET})
    if reasons:
        lines += ["Why the GraphModel stays above ORT where it does (the `tf.profile` below, Node wasm):", "",
                  *reasons, ""]
    profiles = _profiles(d)
    if profiles:
        lines += ["Where the time goes: warm calls of each TF.js model under `tf.profile` in Node wasm (kernel "
                  "time summed per op within a call, the median over 5 calls; the count is the op's kernels per "
                  "call; profiling adds a little to each kernel):", "", *profiles, ""]
    lines += [
        "What changed in the LayersModel (issue 22): LayerNorm over the last axis no longer uses tfjs' "
        "`LayerNormalization` layer, which tiles mean, variance, gamma and beta to the input's shape on every call "
        "(the wasm Tile took about half of BERT-tiny's time); it is composed from layers that broadcast "
        "(topology/layers/layernorm_tilefree.py). Attention with up to 4 key/value heads runs all heads in one "
        "product (topology/layers/attention_merged.py) instead of one Dense per head and projection. The GraphModel "
        "(issue 21, docs/graph-model.md) has neither cost by construction: broadcasting arithmetic, "
        "`_FusedMatMul`/`_FusedConv2D` with bias and activation inside.", "",
        "What changed in the GraphModel (issue 22; topology/graphdef/ops/linalg.py, rewrites.py, rewrites_norm.py, "
        "rewrites_softmax.py): "
        "TF.js 4.22's wasm backend hands a matrix product to XNNPACK only with batch 1 and both transpose flags "
        "off; every other product runs in a plain loop (`node bench/matmul_wasm.mjs` on the quiet machine, load "
        "1.8; 128 tokens × 64: 0.25 ms "
        "at batch 1 without flags, 1.1 ms with `transpose_b`, 1.8 ms at batch 2). `BatchMatMulV2` is now written "
        "without adjoint flags (the operands swapped, (Bᵀ·Aᵀ)ᵀ, when that needs fewer transposes), and products "
        "of at least 2¹⁸ multiply-adds per head over a (batch, heads) pair of axes run one per head (`Unpack`, "
        "a product over the batch alone, `Pack`), so batch 1 takes the fast path: BERT-tiny's 4 attention products "
        "went from 5.1 to 0.7 ms of kernel time in Node wasm (ViT-Ti's 37-token products stayed one "
        "`BatchMatMulV2`: there the extra ops cost more than they save; see the block-diagonal products below). Fewer ops per call: LayerNorm's "
        "statistics in 4 ops instead of 10 (`layernorm_stats`), its gamma and beta folded into the matmuls "
        "reading it (`fold_norm_affine`, pre-LN ViT), `jax.nn.softmax`'s 8 ops as TF.js's `Softmax`, heads-shaped q/k/v biases and the 1/√d scale folded into "
        "their `_FusedMatMul` (ViT-Ti's 36 q/k/v projections had stayed MatMul + Add), repeated nodes merged "
        "(`merge_duplicates`: the Reshapes feeding q, k, v; BERT's per-layer mask), average pooling's `x·4/4` "
        "dropped (`cancel_scale`: MNIST's two `Multiply`), Transpose pairs folded. Graph ops per call (constants "
        "and inputs aside), before -> after: MNIST 12 -> 8, BERT-tiny 195 -> 149 (12 of them the per-head "
        "`Unpack`/`Pack`), ViT-Ti 940 -> 561.", "",
        "Then fewer ops per transformer block (rewrites_gelu.py, rewrites_heads.py, rewrites_gather.py; "
        "docs/graph-model.md lists each): `jax.nn.gelu`'s 6 ops and the Reshape pair around them as "
        "`t + t·erf(t)` with √½ folded into the matmuls on either side (`gelu`), BERT's `q / √d` folded into q's "
        "kernel through the head Reshapes (`fold_scale`), heads split by one `Split` on the feature axis and merged "
        "by one `ConcatV2` instead of Reshape/Transpose/Unpack and Pack/Transpose/Reshape, a masked `Softmax` per "
        "head instead of Pack, Add, Softmax, Unpack (`split_heads`), q, k and v as one `_FusedMatMul` and one "
        "`Split` (`merge_qkv`), and the embedding lookups as `GatherNd` (`gather_rows`: TF.js 4.22's wasm "
        "`GatherV2` copies element by element, 0.4 ms for 128 rows of 128 in Node wasm against 0.13 ms for "
        "`GatherNd` with the clamping and NaN fill around it). Ops per call: BERT-tiny 149 -> 134 (one layer "
        "50 -> 36; the lookups add 12 small ops), ViT-Ti 561 -> 501 (one block 47 -> 42). Paired in Chromium "
        "wasm (load 1–3, per-round ratios of 8–10 blocks): GELU alone 0.97× the time of the previous ViT-Ti "
        "GraphModel; BERT-tiny 0.96× from the head rewrites, 0.88× from `gather_rows`; all of them against the "
        "previous GraphModel, same run (load 1.2–1.4, 10 rounds): BERT-tiny 0.92× (1.59× -> 1.50× ORT), ViT-Ti "
        "0.95× (1.43× -> 1.35× ORT). ViT-Ti's "
        "37-token attention is not split per head: per head (Split, 3 products, 3 Softmax, "
        "3 products, ConcatV2, q/k/v merged) measured 1.12× slower in Chromium, the 37×64 products are too "
        "small for XNNPACK's per-call set-up to pay. Instead every head runs in one batch-1 product against a "
        "block-diagonal operand (`[1, 37, 192] · [1, 192, 111]` for the scores, `[1, 37, 111] · [1, 111, 192]` "
        "for the output, already in the merged-heads layout; the block built by one broadcasting `Mul` with a "
        "0/1 mask, TF.js's `Tile` being 0.8 ms in wasm; `softmax_transposed` drops the Transpose pair around "
        "each Softmax): 3× the multiply-adds on the fast path, 24 products 4.4 -> 2.1 ms of kernel time, "
        "the model 0.90× the time of the previous GraphModel in Node wasm (paired, 8 rounds, load 1.0); against "
        "ORT 1.31× -> 1.24× in Chromium, 1.40× -> 1.27× in Node (the previous run and this one). BERT-tiny keeps "
        "one product per head: block-diagonal there measured 1.03× its time (kernels 4.6 -> 4.9 ms; q, k, v are "
        "then no longer merged into one matmul). What remains, in Node wasm's profile above: ViT-Ti's "
        "`_FusedMatMul` kernels alone take about 10 of ORT's 14 ms for the whole model, `Erf` 1.9 ms, the "
        "attention products 2.1 ms at 9.1 G multiply-adds/s (18.9 M of them, the block-diagonal zeros included); BERT-tiny's kernels are about as long as "
        "ORT's whole call. The timing loop (bench/browser_compare.mjs) calls the GraphModel the cheapest "
        "correct way a user can: `model.execute` (no control flow: `executeAsync` only adds promise work, "
        "`predict` wraps `execute`), with input tensors made from typed arrays inside every timed call as ORT "
        "copies its feeds in every `session.run` (checked: no measurable difference from tensors made once), "
        "the output read back with `data()` as ORT's is; ORT is set to one wasm thread, TF.js's wasm backend "
        "picks its own build (in Chromium the page is not cross-origin isolated, so no threads either).", ""]
    return lines
