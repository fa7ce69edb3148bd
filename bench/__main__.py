"""``python -m bench``: run the benchmark suite, write docs/benchmarks.md, plots and a JSON file.

    python -m bench                         # everything (~30-40 min on 2 cores; needs ~8 GB free disk)
    python -m bench --quick                 # tiny sizes, 2 runs, no Chromium/official converter (< 1 min)
    python -m bench --only mnist,tfjs       # some sections: dataflow mnist sizes scaling large chunked allsteps official tfjs optimize
    python -m bench --only dataflow --merge # the issue-13 rows (start-up, kernel copy, memory bound, Orbax overlap)
    python -m bench --only mnist --merge    # re-measure one section, keep the others in latest.json
    python -m bench --only transformers --merge   # MNIST, ResNet-18, BERT-tiny, ViT-Ti: both formats vs onnxruntime-web (setup.sh --bench)
    python -m bench --report-only bench/results/latest.json    # re-render the page from saved results

Full runs write bench/results/latest.json, docs/benchmarks.md and docs/img/bench_*.png; quick
runs write only what ``--json`` / ``--docs`` ask for. Exit status 1 if a section failed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.context import OFFICIAL_CONVERTER, ROOT, Context, remove
from bench.hand_sections import keep_hand_written

SECTIONS = ("dataflow", "mnist", "sizes", "chunked", "all_steps", "official", "tfjs", "optimize", "transformers")
ALIASES = {"issue13": "dataflow", "data": "dataflow", "scaling": "sizes", "large": "sizes", "allsteps": "all_steps", "all-steps": "all_steps",
           "latency": "tfjs", "accuracy": "tfjs"}
NEEDED_DISK = 8 * 2**30  # 1 GB msgpack + Orbax + outputs + copies, and the 1.1 GiB chunked file twice


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 runs: a smoke test, not a benchmark")
    parser.add_argument("--only", help="comma-separated sections (" + ", ".join(SECTIONS) + "; also scaling, large)")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out")
    parser.add_argument("--browser", action=argparse.BooleanOptionalAction, default=None,
                        help="Chromium latency (default: on, off with --quick)")
    parser.add_argument("--official", action=argparse.BooleanOptionalAction, default=None,
                        help="official tensorflowjs_converter comparison (default: on, off with --quick)")
    parser.add_argument("--scratch", type=Path, help="folder for the GB-sized temporary files (default: system temp)")
    parser.add_argument("--json", type=Path, help="results file (default: bench/results/latest.json; none with --quick)")
    parser.add_argument("--docs", type=Path, help="markdown page (default: docs/benchmarks.md; none with --quick)")
    parser.add_argument("--images", type=Path, help="plot folder (default: docs/img, beside --docs)")
    parser.add_argument("--report-only", type=Path, metavar="RESULTS.json", help="only re-render docs from a results file")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the sections run now in the existing --json file, keep the others")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--quiet", action="store_true", help="no progress log on stderr")
    return parser.parse_args(argv)


def selected(args: argparse.Namespace) -> tuple[list[str], list[int] | None]:
    """Sections to run, and the MLP widths of the size section (None: by mode)."""
    from bench.conversion import FULL_WIDTHS

    wanted = SECTIONS if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    widths = None
    names = []
    for name in wanted:
        if name == "large" and "scaling" not in wanted:
            widths = [max(FULL_WIDTHS)]
        canonical = ALIASES.get(name, name)
        if canonical not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}, scaling, large")
        if canonical not in names:
            names.append(canonical)
    skip = {ALIASES.get(s.strip(), s.strip()) for s in args.skip.split(",") if s.strip()}
    if args.official is False or (args.quick and args.official is None and not args.only):
        skip.add("official")
    if args.quick and not args.only:  # minutes of ResNet-18 / ViT-Ti conversions and timing: not a smoke test
        skip.update(("optimize", "transformers"))
    return [n for n in SECTIONS if n in names and n not in skip], widths


def machine(scratch: Path) -> dict:
    """A description of the machine and the software versions measured."""
    def first(cmd: list[str]) -> str:
        try:
            text = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
            return text.splitlines()[0] if text else "?"
        except (OSError, subprocess.SubprocessError):
            return "not installed"

    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = "?"
    try:
        kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    fs = first(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", str(scratch)])
    usage = shutil.disk_usage(scratch)
    import importlib.metadata as md

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "?"

    tfjs_version = "?"
    try:
        tfjs_version = json.loads((ROOT / "node_modules/@tensorflow/tfjs/package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        pass
    os_name = "?"
    try:
        os_name = next(l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release")
                       if l.startswith("PRETTY_NAME"))
    except (OSError, StopIteration):
        pass
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores", "RAM": mem, "OS": f"{os_name}, Linux {platform.release()}",
        "scratch disk": f"{scratch.parent} on {fs}, {usage.free / 2**30:.0f} GiB free",
        "Python": platform.python_version(),
        "numpy / msgpack / ml_dtypes / tensorstore": " / ".join(
            version(d) for d in ("numpy", "msgpack", "ml_dtypes", "tensorstore")),
        "jax / flax / orbax-checkpoint (making checkpoints, reference)": " / ".join(
            version(d) for d in ("jax", "flax", "orbax-checkpoint")),
        "Node / @tensorflow/tfjs": f"{first(['node', '--version'])} / {tfjs_version}",
        "Chromium": first(["/usr/bin/chromium", "--version"]) if Path("/usr/bin/chromium").exists() else "not installed",
        "official converter": _official_versions(),
    }


def _official_versions() -> str:
    # Read the venv's package metadata: running the converter would import TensorFlow (~6 s).
    site = sorted(OFFICIAL_CONVERTER.parent.parent.glob("lib/python*/site-packages"))
    if not OFFICIAL_CONVERTER.exists() or not site:
        return "not installed"
    found = {}
    for dist in ("tensorflowjs", "tensorflow", "tf_keras"):
        infos = sorted(site[0].glob(f"{dist}-*.dist-info"))
        found[dist] = infos[0].name[len(dist) + 1:-len(".dist-info")] if infos else "?"
    return ", ".join(f"{k} {v}" for k, v in found.items()) + " (.venv-tfjs)"


def run_sections(args: argparse.Namespace, ctx: Context, sections: list[str], widths: list[int] | None) -> dict:
    from bench import conversion, dataflow, latency, official

    results: dict = {}
    free = shutil.disk_usage(ctx.scratch).free
    # Fill the children's bytecode cache first, so no measured run pays for compiling.
    ctx.run_ok([ctx.python, "-m", "compileall", "-q", "writer", "topology", "bench", "examples"], "compileall")
    for name in sections:
        started = time.perf_counter()
        load = os.getloadavg()[0]
        try:
            if name in ("sizes", "chunked", "dataflow") and not ctx.quick and free < NEEDED_DISK:
                results[name] = {"skipped": f"only {free / 2**30:.1f} GiB free in {ctx.scratch}; needs 8 GiB"}
                continue
            if name == "dataflow":
                results[name] = dataflow.bench_dataflow(ctx)
            elif name == "mnist":
                results[name] = conversion.bench_mnist(ctx)
            elif name == "sizes":
                chosen = widths or (conversion.QUICK_WIDTHS if ctx.quick else conversion.FULL_WIDTHS)
                results[name] = conversion.bench_sizes(ctx, chosen)
            elif name == "chunked":
                results[name] = conversion.bench_chunked(ctx)
            elif name == "all_steps":
                results[name] = conversion.bench_all_steps(ctx)
            elif name == "official":
                results[name] = official.bench_official(ctx)
            elif name == "optimize":
                from bench.optimize import bench_optimize

                browser = args.browser if args.browser is not None else not ctx.quick
                results[name] = bench_optimize(ctx, browser=browser)
            elif name == "transformers":
                from bench.transformers import bench_transformers  # jax, flax and the models: only when asked

                results[name] = bench_transformers(ctx)
            elif name == "tfjs":
                browser = args.browser if args.browser is not None else not ctx.quick
                results[name] = latency.bench_tfjs(ctx, results.get("official"), browser=browser)
        except Exception as exc:  # noqa: BLE001  one failed section must not lose the others
            ctx.log(f"section {name} FAILED: {type(exc).__name__}: {exc}")
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["seconds"] = round(time.perf_counter() - started, 1)
        results[name]["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        results[name]["load"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        ctx.log(f"section {name} done in {results[name]['seconds']} s")
    return results


def commands(results: dict, invocation: str) -> list[str]:
    """The commands measured, as one would type them."""
    lines = [invocation]
    data = results.get("dataflow") or {}
    if "mnist" in data:
        lines += [data["mnist"]["orbax"]["command"], data["mnist"]["msgpack"]["command"],
                  "python -m writer mlp-4096.msgpack out --quiet   # vs: cp mlp-4096.msgpack copy",
                  data["chunked"]["command"],
                  "python -m writer orbax/w4096 out --quiet   # vs: a process loading every tensor (bench/dataflow.py)"]
    mnist = results.get("mnist") or {}
    for mode in ("float32", "uint8"):
        if mode in mnist:
            lines.append(mnist[mode]["command"])
    if (results.get("sizes") or {}).get("rows"):
        lines += ["python -m writer mlp-<width>.msgpack out --quiet [--quantize uint8]   # vs: cp mlp-<width>.msgpack copy",
                  "python -m writer orbax/w<width> out --quiet [--quantize uint8]        # vs: cp -r orbax/w<width> copy"]
    if "command" in (results.get("chunked") or {}):
        lines.append(results["chunked"]["command"])
    if "function" in (results.get("all_steps") or {}):
        lines.append("python -c 'from writer.commands.convert.all_steps import convert_all_steps; convert_all_steps(\"manager\", \"out\")'")
    for mode in ((results.get("official") or {}).get("modes") or {}).values():
        lines.append(mode["command"])
    for model in ((results.get("optimize") or {}).get("models") or {}).values():
        lines.append(model["command"])
    if "variants" in (results.get("tfjs") or {}):
        lines.append("node bench/browser_latency.mjs CONFIG.json   # Chromium latency")
    return lines


def write_outputs(results: dict, json_path: Path | None, docs: Path | None, images: Path | None) -> None:
    from bench import report

    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if docs is not None:
        images = images or docs.parent / "img"
        report.plots(results, images)
        rel = os.path.relpath(images, docs.parent)
        docs.parent.mkdir(parents=True, exist_ok=True)
        page = report.render(results, rel)
        if docs.exists():  # sections written by hand (measured outside this command) stay
            page = keep_hand_written(docs.read_text(encoding="utf-8"), page)
        docs.write_text(page, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the suite; returns the exit status (1 if any section failed).

    Example:
        >>> main(["--quick", "--only", "mnist", "--json", "/tmp/r.json"])     # doctest: +SKIP
        0
    """
    args = parse_args(argv)
    if args.report_only:
        results = json.loads(args.report_only.read_text(encoding="utf-8"))
        write_outputs(results, None, args.docs or ROOT / "docs" / "benchmarks.md", args.images)
        return 0
    sections, widths = selected(args)
    base = args.scratch or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="flax2tfjs-bench-", dir=base))
    ctx = Context(scratch, quick=args.quick, verbose=not args.quiet)
    invocation = "python -m bench" + (" " + " ".join(sys.argv[1:] if argv is None else argv)).rstrip()
    started = time.perf_counter()
    try:
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "quick": args.quick, "sections": sections, "load_start": os.getloadavg()[0],
                "machine": machine(scratch), "command": invocation}
        results = run_sections(args, ctx, sections, widths)
    finally:
        if not args.keep:
            remove(scratch)
    meta.update(load_end=os.getloadavg()[0], duration_s=round(time.perf_counter() - started, 1),
                commands=commands(results, invocation))
    results = {"meta": meta, **results}
    json_path = args.json or (None if args.quick else ROOT / "bench" / "results" / "latest.json")
    if args.merge and json_path is not None and json_path.exists():
        merged = json.loads(json_path.read_text(encoding="utf-8"))
        merged.update({name: results[name] for name in sections})
        merged["meta"].setdefault("merged", []).append({"command": invocation, "date": meta["date"],
                                                        "sections": sections})
        merged["meta"]["commands"] = commands(merged, merged["meta"]["command"])
        results = merged
    docs = args.docs or (None if args.quick else ROOT / "docs" / "benchmarks.md")
    write_outputs(results, json_path, docs, args.images)
    failed = [name for name in sections if "error" in results.get(name, {})]
    if failed:
        print(f"failed sections: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
