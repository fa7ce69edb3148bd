"""``--optimize`` in what users ship: batch-1 prediction time with and without it.

Models (bench/optimize_models.py): a BatchNorm CNN at 32x32x3 and the Flax ImageNet example's
ResNet-18 at 64x64x3, with trained-looking random variables (BatchNorm statistics included),
saved as Flax msgpack and converted by the CLI with and without ``--no-optimize``. The BN CNN's
Keras twin (bench/keras_bn_cnn.py) goes through the official ``tensorflowjs_converter``.
Every model's TF.js output is first compared with JAX. Latency: ``model.predict`` of one sample
plus reading it back, after warm-up; Node wasm through writer/tfjs_node.py (blocks of runs,
models interleaved), Chromium wasm through bench/browser_latency.mjs (a fresh browser per block).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from bench.context import OFFICIAL_CONVERTER, OFFICIAL_PYTHON, ROOT, Context
from bench.measure import summarize

MODELS = {"bn-cnn": ("BNCNN", (32, 32, 3)), "resnet18": ("ResNet18", (64, 64, 3))}
MODULE_FILE = "bench/optimize_models.py"
KERAS_SCRIPT = ROOT / "bench" / "keras_bn_cnn.py"
BROWSER_SCRIPT = ROOT / "bench" / "browser_latency.mjs"
TARGET_SPEEDUP = 1.3


def trained_looking(tree, seed: int = 7):
    """Random variables of a realistic size; BatchNorm means around 0, variances in [0.5, 2], scales in [0.5, 1.5]."""
    import jax

    rng = np.random.RandomState(seed)

    def draw(path, leaf):
        leaf = np.asarray(leaf)
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "var":
            return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
        if name in ("mean", "bias"):
            return rng.normal(0, 0.3, leaf.shape).astype(np.float32)
        if name == "scale":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        fan_in = int(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else 1
        return (rng.normal(0, 1.0, leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, tree)


def _module(name: str):
    import bench.optimize_models as models

    return getattr(models, MODELS[name][0])()


def make_checkpoint(ctx: Context, name: str) -> tuple[Path, dict]:
    """Save trained-looking variables of model ``name``; return the msgpack path and the variables."""
    import flax.serialization
    import jax
    import jax.numpy as jnp

    shape = MODELS[name][1]
    variables = _module(name).init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)))
    variables = trained_looking(jax.tree_util.tree_map(np.asarray, flax.core.unfreeze(variables)))
    path = ctx.path(f"{name}.msgpack")
    path.write_bytes(flax.serialization.to_bytes(variables))
    return path, variables


def keras_params(variables: dict, target: Path) -> Path:
    """The BN CNN's variables under the Keras twin's ``<layer>/<weight>`` names, as .npz."""
    params, stats = variables["params"], variables["batch_stats"]
    arrays = {"head/kernel": params["head"]["kernel"], "head/bias": params["head"]["bias"]}
    for stage in range(2):
        for i in range(2):
            arrays[f"conv{stage}_{i}/kernel"] = params[f"conv{stage}_{i}"]["kernel"]
            bn = f"bn{stage}_{i}"
            arrays.update({f"{bn}/gamma": params[bn]["scale"], f"{bn}/beta": params[bn]["bias"],
                           f"{bn}/moving_mean": stats[bn]["mean"], f"{bn}/moving_variance": stats[bn]["var"]})
    np.savez(target, **{k: np.asarray(v) for k, v in arrays.items()})
    return target


def _official(ctx: Context, variables: dict) -> tuple[Path | None, dict]:
    if not OFFICIAL_PYTHON.exists() or not OFFICIAL_CONVERTER.exists():
        return None, {"skipped": f"{OFFICIAL_PYTHON} not found (see /work/shared/MISSION.md)"}
    ctx.log("optimize: Keras twin of the BN CNN -> tensorflowjs_converter")
    params = keras_params(variables, ctx.path("bn_cnn_keras.npz"))
    h5 = ctx.path("bn_cnn.h5")
    info = json.loads(ctx.run_ok([str(OFFICIAL_PYTHON), str(KERAS_SCRIPT), str(params), str(h5)],
                                 "building the Keras BN CNN", timeout=600).stdout.strip().splitlines()[-1])
    target = ctx.path("official-bn-cnn")
    ctx.run_ok([str(OFFICIAL_CONVERTER), "--input_format", "keras", "--output_format", "tfjs_layers_model",
                str(h5), str(target)], "tensorflowjs_converter", timeout=600)
    return target, {"versions": info, "command": "tensorflowjs_converter --input_format keras "
                                                 "--output_format tfjs_layers_model bn_cnn.h5 out/"}


def _layer_count(folder: Path) -> int:
    topology = json.loads((folder / "model.json").read_text())["modelTopology"]
    config = topology.get("model_config", topology)["config"]
    layers = config["layers"] if isinstance(config, dict) else config
    return sum(1 for layer in layers if layer["class_name"] != "InputLayer")


def bench_optimize(ctx: Context, browser: bool = True) -> dict:
    """Convert both models with and without --optimize (and the official twin); check and time them."""
    import jax
    import jax.numpy as jnp

    from writer.tfjs_node import TfjsRunner

    models: dict[str, dict] = {}
    references: dict[str, tuple] = {}
    official_info: dict = {"skipped": "not run"}
    for name, (cls, shape) in MODELS.items():
        ctx.log(f"optimize: {name} checkpoint and conversions")
        checkpoint, variables = make_checkpoint(ctx, name)
        x = np.random.RandomState(3).uniform(0, 1, (4, *shape)).astype(np.float32)
        expected = np.asarray(_module(name).apply(variables, jnp.asarray(x)))
        for optimize in (False, True):
            label = f"{name}-{'optimized' if optimize else 'literal'}"
            target = ctx.path(label)
            extra = ["--module", f"{MODULE_FILE}:{cls}", "--input-shape", ",".join(map(str, shape))]
            command = ctx.writer(checkpoint, target, *extra, *([] if optimize else ["--no-optimize"]))
            result = ctx.run_ok(command, f"converting {label}", timeout=900)
            rewrites = json.loads((target / "model.json").read_text())["userDefinedMetadata"]["flax2tfjs"]["optimize"]
            models[label] = {"dir": target, "model": name, "converter": "flax2tfjs", "optimize": optimize,
                             "layers": _layer_count(target), "rewrites": len(rewrites["rewrites"]),
                             "convert_s": round(result.seconds, 3),
                             "command": " ".join(["python -m writer", f"{name}.msgpack", "out", *extra,
                                                  *([] if optimize else ["--no-optimize"])])}
            references[label] = (x, expected)
        if name == "bn-cnn":
            official_dir, official_info = _official(ctx, variables)
            if official_dir is not None:
                models["bn-cnn-official"] = {"dir": official_dir, "model": name, "converter": "tensorflowjs_converter",
                                             "optimize": None, "layers": _layer_count(official_dir), "rewrites": 0,
                                             "command": official_info["command"]}
                references["bn-cnn-official"] = (x, expected)
    out: dict = {"official": official_info}
    blocks = 1 if ctx.quick else 8
    repeat = 5 if ctx.quick else 15
    samples: dict[str, list[float]] = {label: [] for label in models}
    per_block: dict[str, list[float]] = {label: [] for label in models}
    with TfjsRunner(timeout=900) as tfjs:
        for label, model in models.items():
            x, expected = references[label]
            got = tfjs.predict(model["dir"], x, backend="wasm").outputs[0]
            model["max_abs_diff_vs_jax"] = float(np.max(np.abs(got.astype(np.float64) - expected)))
            model["max_abs_jax"] = float(np.max(np.abs(expected)))
        for block in range(blocks):
            ctx.log(f"optimize: Node wasm block {block + 1} of {blocks}")
            for label, model in models.items():  # interleaved: drifting machine load hits every model alike
                x = np.ascontiguousarray(references[label][0][:1])
                times = tfjs.predict(model["dir"], x, backend="wasm", repeat=repeat + 3).predict_ms[3:]
                samples[label] += times
                per_block[label].append(float(np.median(times)))
        out["node_versions"] = tfjs.request({"cmd": "version"})
    out["models"] = {label: {k: v for k, v in m.items() if k != "dir"} for label, m in models.items()}
    out["node_wasm"] = {label: summarize(s).to_json() for label, s in samples.items()}
    out["node_wasm_blocks"] = per_block
    if browser:
        out["chromium_wasm"], out["chromium_wasm_blocks"] = _chromium(ctx, {l: m["dir"] for l, m in models.items()})
    else:
        out["chromium_wasm"] = {"skipped": "quick mode (run without --quick, or pass --browser)"}
    out["speedups"] = speedups(out)
    return out


def _chromium(ctx: Context, dirs: dict[str, Path]) -> tuple[dict, dict]:
    if not shutil.which("node") or not Path("/usr/bin/chromium").exists():
        return {"skipped": "node or /usr/bin/chromium missing (apt-get install -y chromium)"}, {}
    config = {"models": {n: str(p) for n, p in dirs.items()}, "backends": ["wasm"], "batches": [1],
              "warmup": 3 if ctx.quick else 5, "repeat": 5 if ctx.quick else 30,
              "budget_ms": 2000 if ctx.quick else 4000, "min_repeat": 5 if ctx.quick else 15}
    samples: dict[str, list[float]] = {n: [] for n in dirs}
    per_block: dict[str, list[float]] = {n: [] for n in dirs}
    meta: dict = {}
    blocks = 1 if ctx.quick else 4
    for block in range(blocks):  # a fresh browser per block
        ctx.log(f"optimize: Chromium wasm block {block + 1} of {blocks}")
        result = ctx.run_ok(["node", str(BROWSER_SCRIPT), json.dumps(config)], "Chromium latency", timeout=1800)
        data = json.loads(result.stdout.strip().splitlines()[-1])
        meta = {k: v for k, v in data.items() if k != "results"}
        for row in data["results"]:
            samples[row["model"]] += row["predict_ms"]
            per_block[row["model"]].append(float(np.median(row["predict_ms"])))
    return {"versions": meta, **{n: summarize(s).to_json() for n, s in samples.items() if s}}, per_block


def speedups(results: dict) -> list[dict]:
    """Latency ratios, literal / optimized per model and runtime, official / optimized for the BN CNN.

    ``ratio_p10``: the ratio of the two models' 10th-percentile times over all samples (the runs least
    disturbed by other jobs on the machine; the verdict uses it). ``ratio``: per block, the ratio of
    the two models' medians (paired, so that load drifting between blocks cancels), summarised over blocks.

    Example:
        >>> r = {"node_wasm_blocks": {"bn-cnn-literal": [3.0, 6.0], "bn-cnn-optimized": [2.0, 4.0]},
        ...      "node_wasm": {"bn-cnn-literal": {"low": 3.0}, "bn-cnn-optimized": {"low": 2.0}}}
        >>> speedups(r)[0]["ratio"]["median"], speedups(r)[0]["ratio_p10"]
        (1.5, 1.5)
    """
    rows = []
    for runtime in ("node_wasm", "chromium_wasm"):
        blocks = results.get(f"{runtime}_blocks") or {}
        table = results.get(runtime) or {}
        pairs = [(name, f"{name}-literal", "--no-optimize", TARGET_SPEEDUP) for name in MODELS]
        pairs.append(("bn-cnn", "bn-cnn-official", "official converter (Keras twin)", 1.0))
        for name, baseline, versus, target in pairs:
            opt, base = blocks.get(f"{name}-optimized"), blocks.get(baseline)
            if opt and base:
                low_opt, low_base = table[f"{name}-optimized"]["low"], table[baseline]["low"]
                rows.append({"runtime": runtime, "model": name, "versus": versus, "target": target,
                             "ratio_p10": round(low_base / low_opt, 3), "p10_ms": [low_base, low_opt],
                             "ratio": summarize([b / o for b, o in zip(base, opt)]).to_json()})
    return rows
