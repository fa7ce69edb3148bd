"""Conversion benchmarks: the MNIST checkpoint, model-size scaling up to 1 GB, a > 1 GiB
chunked tensor, and ``--all-steps``. Every measurement is a whole child process.

Timing rules (the VM's page cache makes single runs meaningless):

* ``os.sync()`` before every timed run, so no run pays for the previous run's writeback;
* the ``cp`` baseline and the conversion alternate run by run (which one goes first
  alternates too), and the ratio is taken per pair, then the median of the ratios;
* inputs are warm in the page cache for both (they were just written), outputs go to the
  same disk as the inputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from bench import checkpoints, verify
from bench.context import ROOT, BenchError, Context, folder_bytes, remove
from bench.measure import MB, summarize
from writer.tfjs_files import DTYPES, stored_nbytes

MNIST_CKPT = ROOT / "examples" / "mnist_ckpt"

# (statement, label): what the MNIST conversion pays for before converting anything.
IMPORT_PROBES = [
    ("pass", "python startup"),
    ("import numpy", "+ numpy"),
    ("import numpy, msgpack, ml_dtypes", "+ msgpack, ml_dtypes"),
    ("import tensorstore", "+ tensorstore (Orbax reader)"),
    ("import jsonschema", "+ jsonschema (model.json check)"),
    ("import writer.convert, writer.readers.orbax, writer.model_json; writer.model_json._validator()",
     "all imports of a conversion"),
    ("import jax", "for scale: import jax"),
]

FULL_WIDTHS = [128, 400, 1280, 4096]  # 16 layers each: 1.05 MB, 10.3 MB, 105 MB, 1.07 GB of float32
QUICK_WIDTHS = [32, 64]
LAYERS = 16


def stats_of(results, key) -> dict:
    return summarize([getattr(r, key) for r in results]).to_json()


# ------------------------------------------------------------------ MNIST


def bench_mnist(ctx: Context) -> dict:
    """Whole-process wall time and peak RSS of converting examples/mnist_ckpt, and where it goes.

    Example:
        >>> bench_mnist(Context(Path("/tmp/s"), quick=True))["float32"]["wall_s"]["n"]   # doctest: +SKIP
        2
    """
    ctx.log("MNIST checkpoint conversion")
    out: dict = {"checkpoint": str(MNIST_CKPT.relative_to(ROOT)), "checkpoint_bytes": folder_bytes(MNIST_CKPT)}
    cases = (("float32", [], True), ("uint8", ["--quantize", "uint8"], True), ("float32_no_bytecode_cache", [], False))
    for label, extra, cached in cases:
        runs = []
        for i in range(ctx.runs(10)):
            target = ctx.path(f"mnist-{label}")
            runs.append(ctx.run_ok(ctx.writer(MNIST_CKPT, target, *extra), "MNIST conversion", bytecode_cache=cached))
            size = folder_bytes(target)
            remove(target)
        out[label] = {"command": shown_command(ctx.writer(MNIST_CKPT, Path("out"), *extra)),
                      "wall_s": stats_of(runs, "seconds"), "cpu_s": stats_of(runs, "cpu_seconds"),
                      "peak_rss_bytes": stats_of(runs, "peak_rss"), "output_bytes": size}
    out["imports"] = []
    for statement, label in IMPORT_PROBES:
        runs = [ctx.run_ok([ctx.python, "-c", statement], label) for _ in range(ctx.runs(5))]
        out["imports"].append({"label": label, "statement": statement,
                               "wall_s": stats_of(runs, "seconds"), "peak_rss_bytes": stats_of(runs, "peak_rss")})
    target = ctx.path("mnist-importtime")
    profiled = ctx.run_ok([ctx.python, "-X", "importtime", *ctx.writer(MNIST_CKPT, target)[1:]], "importtime")
    remove(target)
    out["importtime_top"] = top_imports(profiled.stderr)
    out["targets"] = {"wall_s": 0.5, "peak_rss_bytes": 100 * MB}
    return out


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def top_imports(stderr: str, count: int = 8) -> list[dict]:
    """The slowest top-level imports from ``python -X importtime`` output (cumulative ms).

    Example:
        >>> top_imports("import time:       100 |        5000 | numpy\\n")
        [{'module': 'numpy', 'cumulative_ms': 5.0}]
    """
    rows = []
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and len(match.group(3)) == 1:  # one space: imported by the program itself
            rows.append({"module": match.group(4), "cumulative_ms": int(match.group(2)) / 1000})
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:count]


# ------------------------------------------------------------------ sizes: scaling and 1 GB


def _baseline(kind: str, source: Path, target: Path) -> list[str]:
    if kind == "dd":  # a user-space copy in 4 MiB blocks: what any byte-transforming program pays
        return ["dd", f"if={source}", f"of={target}", "bs=4M", "status=none"]
    return ["cp", "-r", str(source), str(target)]


def measure_pairs(ctx: Context, checkpoint: Path, extra: list[str], runs: int, baselines: tuple[str, ...],
                  check=None) -> dict:
    """Alternate baseline copies and conversions ``runs`` times; per-pair ratios.

    ``check(out_dir)`` runs on the first output (before deletion) and its result is kept.
    """
    conv, base, ratios, checked = [], {b: [] for b in baselines}, {b: [] for b in baselines}, None
    for i in range(runs):
        order = ["convert", *baselines] if i % 2 else [*baselines, "convert"]
        timings = {}
        for step in order:
            os.sync()
            if step == "convert":
                target = ctx.path("size-out")
                result = ctx.run_ok(ctx.writer(checkpoint, target, *extra), f"conversion of {checkpoint.name}")
                conv.append(result)
                if checked is None and check is not None:
                    checked = check(target)
                remove(target)
            else:
                target = ctx.path("size-copy")
                result = ctx.run_ok(_baseline(step, checkpoint, target), step)
                base[step].append(result)
                remove(target)
            timings[step] = result.seconds
        for b in baselines:
            ratios[b].append(timings["convert"] / timings[b])
    out = {"command": shown_command(ctx.writer(checkpoint, Path("out"), *extra)),
           "wall_s": stats_of(conv, "seconds"), "cpu_s": stats_of(conv, "cpu_seconds"),
           "peak_rss_bytes": stats_of(conv, "peak_rss"), "check": checked}
    for b in baselines:
        out[f"{b}_s"] = stats_of(base[b], "seconds")
        out[f"{b}_cpu_s"] = stats_of(base[b], "cpu_seconds")
        out[f"ratio_to_{b}"] = summarize(ratios[b]).to_json()
    return out


def _read_only(ctx: Context, checkpoint: Path, runs: int) -> dict:
    """Open the checkpoint and load every tensor, writing nothing: the read/decode floor."""
    code = ("import sys\nfrom writer.readers import read_checkpoint\nck = read_checkpoint(sys.argv[1])\n"
            "for ref in ck.tensors.values():\n    ref.load()\nck.close()\n")
    results = []
    for _ in range(runs):
        os.sync()
        results.append(ctx.run_ok([ctx.python, "-c", code, str(checkpoint)], "read-only pass"))
    return {"wall_s": stats_of(results, "seconds"), "cpu_s": stats_of(results, "cpu_seconds"),
            "peak_rss_bytes": stats_of(results, "peak_rss")}


def bench_sizes(ctx: Context, widths: list[int]) -> dict:
    """Convert 16-layer MLPs of each width, msgpack and Orbax, against ``cp`` of the same bytes.

    The largest width also runs with ``--quantize uint8``, a ``dd`` baseline and a read-only
    pass. Outputs of the first run of each case are compared with the generated values.
    """
    ctx.log(f"making MLP checkpoints, widths {widths}")
    made: dict[int, dict] = {}
    for width in widths:
        path = ctx.path(f"mlp-{width}.msgpack")
        made[width] = {"msgpack": checkpoints.write_mlp_msgpack(path, width, LAYERS)}
    orbax_root = ctx.path("orbax")
    info = json.loads(ctx.run_ok([ctx.python, "-m", "bench.checkpoints", "orbax", str(orbax_root),
                                  "--widths", ",".join(map(str, widths)), "--layers", str(LAYERS)],
                                 "making Orbax checkpoints").stdout)
    for width in widths:
        made[width]["orbax"] = info[str(width)]
    largest = max(widths)
    rows = []
    for width in widths:
        for fmt in ("msgpack", "orbax"):
            ckpt = Path(made[width][fmt]["path"])
            big = width == largest
            runs = ctx.runs(6 if big else 5)
            cases = [("float32", [])] + ([("uint8", ["--quantize", "uint8"])] if big else [])
            for label, extra in cases:
                ctx.log(f"{fmt} width {width} ({made[width][fmt]['bytes'] / MB:.1f} MB) {label}: {runs} runs")
                baselines = ("cp", "dd") if big and fmt == "msgpack" else ("cp",)
                row = measure_pairs(ctx, ckpt, extra, runs, baselines, check=verify.check_mlp)
                row.update(format=fmt, width=width, layers=LAYERS, quantize=label,
                           checkpoint_bytes=made[width][fmt]["bytes"], params=made[width][fmt]["params"],
                           largest_tensor_bytes=width * width * 4)
                if big and label == "float32":
                    row["read_only"] = _read_only(ctx, ckpt, runs)
                rows.append(row)
                if row["check"] is None or not row["check"]["ok"]:
                    raise BenchError(f"wrong output for {ckpt}: {row['check']}")
            remove(ckpt)
    remove(orbax_root)
    return {"layers": LAYERS, "widths": widths, "rows": rows,
            "targets": {"peak_rss_bytes": 300 * MB, "ratio_to_cp": 3.0}}


# ------------------------------------------------------------------ chunked > 1 GiB


def bench_chunked(ctx: Context) -> dict:
    """One Dense whose kernel Flax splits into chunks (> 1 GiB): convert, then check the bytes.

    Full mode: a (16384, 17920) float32 kernel (1.09 GiB), written by the real
    ``flax.serialization.to_bytes``. Quick mode: the same layout with 64 KiB chunks, written by
    bench/checkpoints.py (byte-identical to Flax, see tests/test_bench_smoke.py).
    """
    path = ctx.path("chunked.msgpack")
    if ctx.quick:
        rows, cols, chunk = 128, 300, 64 * 1024
        kernel = checkpoints.values(0, 0, "kernel", (rows, cols))
        bias = checkpoints.values(0, 0, "bias", (cols,))
        checkpoints.write_flax_msgpack(path, {"params": {"Dense_0": {"kernel": kernel, "bias": bias}}}, chunk)
        flat = kernel.reshape(-1)
        picks = sorted({0, flat.size - 1, 1234, flat.size // 2})
        info = {"kernel_sha256": hashlib.sha256(flat.tobytes()).hexdigest(),
                "bias_sha256": hashlib.sha256(bias.tobytes()).hexdigest(),
                "samples": {str(i): float(flat[i]) for i in picks}, "kernel_shape": [rows, cols],
                "kernel_bytes": int(kernel.nbytes), "chunked": True, "bytes": path.stat().st_size,
                "writer": f"bench.checkpoints (chunks of {chunk} bytes)"}
        del kernel, flat
    else:
        ctx.log("making a 1.09 GiB single-tensor checkpoint with flax.serialization.to_bytes")
        info = json.loads(ctx.run_ok([ctx.python, "-m", "bench.checkpoints", "flax-chunked", str(path),
                                      "--rows", "16384", "--cols", "17920"], "making the chunked checkpoint").stdout)
        info["writer"] = "flax.serialization.to_bytes (chunks of 1 GiB)"
    runs, checked, results = ctx.runs(3), None, []
    for i in range(runs):
        target = ctx.path("chunked-out")
        os.sync()
        ctx.log(f"chunked conversion run {i + 1}/{runs}")
        results.append(ctx.run_ok(ctx.writer(path, target), "chunked conversion"))
        if checked is None:
            checked = _check_chunked(target, info)
        remove(target)
    remove(path)
    info.pop("path", None)
    return {"checkpoint": info, "wall_s": stats_of(results, "seconds"), "peak_rss_bytes": stats_of(results, "peak_rss"),
            "check": checked, "command": shown_command(ctx.writer(Path("chunked.msgpack"), Path("out")))}


def _check_chunked(out_dir: Path, info: dict) -> dict:
    found = {}
    for spec, offset, stream in verify.weights(out_dir):
        found[spec["name"]] = (spec, offset, stream)
    spec, offset, stream = found["Dense_0/kernel"]
    nbytes = stored_nbytes(spec)  # float32: the chunked kernel is not quantized
    float32 = DTYPES["float32"]
    digest = hashlib.sha256()
    for start in range(0, nbytes, 16 * MB):
        digest.update(stream.read(offset + start, min(16 * MB, nbytes - start)))
    samples = {}
    for index, expected in info["samples"].items():
        got = float(np.frombuffer(stream.read(offset + int(index) * float32.itemsize, float32.itemsize), float32)[0])
        samples[index] = {"expected": expected, "got": got, "equal": got == expected}
    bspec, boffset, bstream = found["Dense_0/bias"]
    bias_digest = hashlib.sha256(bstream.read(boffset, stored_nbytes(bspec))).hexdigest()
    ok = (digest.hexdigest() == info["kernel_sha256"] and bias_digest == info["bias_sha256"]
          and list(spec["shape"]) == info["kernel_shape"] and all(s["equal"] for s in samples.values()))
    return {"ok": ok, "kernel_sha256_equal": digest.hexdigest() == info["kernel_sha256"],
            "bias_sha256_equal": bias_digest == info["bias_sha256"], "shape": spec["shape"],
            "samples": samples, "output_bytes": folder_bytes(out_dir)}


# ------------------------------------------------------------------ --all-steps


def bench_all_steps(ctx: Context) -> dict:
    """Every step of a CheckpointManager folder: one process vs one ``python -m writer`` per step."""
    width, steps = (32, 3) if ctx.quick else (512, 5)
    root = ctx.path("manager")
    ctx.log(f"--all-steps: making a CheckpointManager folder with {steps} steps")
    info = json.loads(ctx.run_ok([ctx.python, "-m", "bench.checkpoints", "manager", str(root), "--width", str(width),
                                  "--layers", "3", "--steps", str(steps)], "making the manager folder").stdout)
    code = ("import sys\nfrom writer.commands.convert.all_steps import convert_all_steps\n"
            "convert_all_steps(sys.argv[1], sys.argv[2])\n")
    one, separate, checks = [], [], {}
    for i in range(ctx.runs(5)):
        target = ctx.path("allsteps-out")
        one.append(ctx.run_ok([ctx.python, "-c", code, str(root), str(target)], "convert_all_steps"))
        if not checks:
            for k, step in enumerate(info["steps"]):
                checks[str(step)] = verify.check_mlp(target / f"step_{step}", seed=k)
        remove(target)
        target = ctx.path("allsteps-separate")
        total = 0.0
        for step in info["steps"]:
            total += ctx.run_ok(ctx.writer(root, target / f"step_{step}", "--step", str(step)), "per-step").seconds
        separate.append(total)
        remove(target)
    remove(root)
    return {"steps": info["steps"], "checkpoint_bytes": info["bytes"], "width": width, "layers": 3,
            "one_process": {"wall_s": stats_of(one, "seconds"), "peak_rss_bytes": stats_of(one, "peak_rss")},
            "separate_processes_wall_s": summarize(separate).to_json(),
            "check": {"ok": all(c["ok"] for c in checks.values()), "steps": checks},
            "function": "writer.commands.convert.all_steps.convert_all_steps(CKPT_DIR, OUT)"}


def shown_command(cmd: list[str]) -> str:
    """A command as a user would type it (``python`` for the interpreter, paths relative)."""
    shown = ["python" if i == 0 else str(part) for i, part in enumerate(cmd)]
    return " ".join(shown).replace(str(ROOT) + "/", "")


