"""Golden snapshot: what every conversion writes, hashed, so a refactor can prove it changed nothing.

    python scripts/golden_snapshot.py record before.json      # on the code before the change
    python scripts/golden_snapshot.py record after.json       # on the code after it
    python scripts/golden_snapshot.py compare before.json after.json

Recorded, per case: the sha256 of every file written (or the error code, message and hint), for
every layer kind's and op family's case (the layer matrix), every GraphModel primitive case, every
diagnostics-corpus case, the public models (HF folders) in each format, and CLI runs of the bundled
example (stdout, stderr and exit code, temporary paths replaced). Run it from a checkout with
``PYTHONPATH`` at the checkout; it takes a few minutes and needs no TF.js.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent


def _digest(path: Path) -> str:
    data = path.read_bytes()
    if path.name == "model.json":  # some cases build their input anew (Orbax timestamps): its hash varies
        data = re.sub(rb'("source": \{[^{}]*"sha256": )"[0-9a-f]{64}"', rb'\1"<SHA>"', data)
    return hashlib.sha256(data).hexdigest()


def _files(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    if folder.is_file():
        return {".": _digest(folder)}
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _scrub(text: str, *folders: Path) -> str:
    for folder in folders:
        text = text.replace(str(folder), "<TMP>")
    text = text.replace(str(ROOT), "<ROOT>")  # the checkout (module paths in messages)
    return re.sub(r"\d+(\.\d+)? ?(s|ms|MiB|MB)\b", "<N>", text)  # timings and sizes printed by progress


def _outcome(run: Callable[[Path], Any], work: Path) -> dict[str, Any]:
    from topology.vocabulary.errors import ConversionError

    out = work / "out"
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            run(out)
    except ConversionError as err:
        return {"error": err.code, "message": _scrub(err.message, work), "hint": _scrub(err.hint or "", work),
                "files": _files(out)}
    except Exception as exc:  # noqa: BLE001  recorded: a change here is a change in behaviour
        return {"exception": f"{type(exc).__name__}: {_scrub(str(exc), work)[:300]}", "files": _files(out)}
    return {"files": _files(out)}


def _matrix() -> dict[str, Callable[[Path], Any]]:
    from tests.jax_reference import case_shapes, prepare
    from topology.layers import REGISTRY
    from topology.ops import families
    from writer import to_tensorflowjs

    runs = {}
    cases = [(f"{kind.key}:{c.name}", c) for kind in REGISTRY.values() for c in kind.cases()]
    cases += [(f"{fam}:{c.name}", c) for fam, module in families().items() for c in module.CASES()]
    for case_id, case in cases:
        def run(out: Path, case: Any = case) -> None:
            module, variables, _ = prepare(case)
            shapes = case_shapes(case)
            to_tensorflowjs(module, out, variables=variables, input_shape=shapes if len(shapes) > 1 else shapes[0],
                            input_dtype=case.input_dtype)
        runs[f"matrix/{case_id}"] = run
    return runs


def _graph_ops() -> dict[str, Callable[[Path], Any]]:
    from topology.graph import InputSpec
    from topology.graphdef.ops import families
    from writer.convert import convert_function

    runs = {}
    for family, module in families().items():
        for case in module.CASES:
            def run(out: Path, case: Any = case) -> None:
                specs = [InputSpec(f"input_{i + 1}", shape, dtype) for i, (shape, dtype) in enumerate(case.inputs)]
                convert_function(case.fn, out, specs)
            runs[f"graph-ops/{family}:{case.name}"] = run
    return runs


def _corpus() -> dict[str, Callable[[Path], Any]]:
    from tests.corpus.cases import CASES
    from tests.corpus.runner import _prepare_output
    from writer.convert import ConvertOptions, convert

    runs = {}
    for case in CASES:
        def run(out: Path, case: Any = case) -> None:
            folder = out.parent / "case"
            folder.mkdir()
            built = case.build(folder)
            target, extra = _prepare_output(case, folder)
            try:
                convert(built.source, target, ConvertOptions(**{**built.options, **extra}),
                        module=built.module, variables=built.variables)
            finally:
                if target.is_dir():
                    out.mkdir(exist_ok=True)
                    for p in sorted(target.rglob("*")):
                        if p.is_file():
                            dest = out / p.relative_to(target)
                            dest.parent.mkdir(parents=True, exist_ok=True)
                            dest.write_bytes(p.read_bytes())
        runs[f"corpus/{case.name}"] = run
    return runs


def _public() -> dict[str, Callable[[Path], Any]]:
    from bench import public_models as pm
    from writer import to_tensorflowjs

    runs = {}
    for case in pm.CASES:
        for fmt in pm.FORMATS:
            def run(out: Path, case: Any = case, fmt: str = fmt) -> None:
                folder = out.parent / "saved"
                module, *_ = pm.build_folder(case, folder)
                if case.kind == "module":
                    to_tensorflowjs(folder / "checkpoint.msgpack", out, module=module,
                                    input_shape=pm.input_shape(case), format=fmt)
                else:
                    to_tensorflowjs(folder, out, input_shape=pm.input_shape(case), format=fmt)
            runs[f"public/{case.name}/{fmt}"] = run
    return runs


CLI_RUNS = [
    ["examples/mnist_ckpt", "{out}"],
    ["examples/mnist_ckpt", "{out}", "--format", "graph-model"],
    ["examples/mnist_ckpt", "{out}", "--format", "auto", "--quantize", "uint8"],
    ["examples/mnist_ckpt", "{out}", "--input-shape", "28,28,1", "--no-optimize"],
    ["examples/mnist_ckpt", "{out}", "--input-shape", "5,5"],
    ["examples/mnist_ckpt", "{out}", "--input-dtype", "int32"],
    ["inspect", "examples/mnist_ckpt"],
    ["inspect", "examples/mnist_ckpt", "--json"],
    ["examples/does_not_exist", "{out}"],
    ["{ckpts}/vit.msgpack", "{out}", "--module", "examples/models/vit.py:ViT"],
    ["{ckpts}/vit.msgpack", "{out}", "--module", "examples/models/vit.py:ViT", "--input-shape", "32,32,3"],
    ["{ckpts}/vit.msgpack", "{out}", "--module", "examples/models/vit.py:ViT", "--input-shape", "32,32,3",
     "--format", "graph-model"],
    ["{ckpts}/resnet.msgpack", "{out}", "--module", "examples/models/resnet.py:ResNet", "--input-shape", "32,32,3"],
    ["{ckpts}/resnet.msgpack", "{out}", "--module", "examples/models/resnet.py:ResNet", "--input-shape", "32,32,3",
     "--format", "graph-model", "--quantize", "float16"],
    ["{ckpts}/vae.msgpack", "{out}", "--module", "examples/models/vae.py:VAE"],
    ["{ckpts}/vae.msgpack", "{out}", "--module", "examples/models/vae.py:VAE", "--input-shape", "784",
     "--format", "auto"],
    ["{ckpts}/vae.msgpack", "{out}"],
    ["{ckpts}/resnet.msgpack", "{out}"],
    ["{ckpts}/vit.msgpack", "{out}", "--input-shape", "32,32,3"],
]


def _cli() -> dict[str, Callable[[Path], Any]]:
    runs = {}
    ckpts = Path(tempfile.mkdtemp(prefix="golden-ckpts-"))  # the example models' checkpoints, saved once
    subprocess.run([sys.executable, str(ROOT / "examples/models/make_checkpoints.py"), str(ckpts)], check=True,
                   capture_output=True)
    for argv in CLI_RUNS:
        def run(out: Path, argv: list[str] = argv) -> None:
            args = [a.replace("{out}", str(out)).replace("{ckpts}", str(ckpts)) for a in argv]
            env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
            done = subprocess.run([sys.executable, "-m", "writer", *args], cwd=ROOT, env=env,
                                  capture_output=True, text=True)
            (out.parent / "cli.json").write_text(json.dumps(
                {"rc": done.returncode, "stdout": _scrub(done.stdout, out, ckpts), "stderr": _scrub(done.stderr, out, ckpts)}))
        runs["cli/" + " ".join(argv)] = run
    return runs


GROUPS = {"matrix": _matrix, "graph-ops": _graph_ops, "corpus": _corpus, "public": _public, "cli": _cli}


def record(path: Path, groups: list[str]) -> None:
    """Run every case of ``groups`` and write their outcomes to ``path`` (JSON)."""
    result: dict[str, Any] = {}
    for group in groups:
        for name, run in GROUPS[group]().items():
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                outcome = _outcome(run, work)
                cli = work / "cli.json"
                if cli.exists():
                    outcome["cli"] = json.loads(cli.read_text())
                result[name] = outcome
            print(f"{name}: {outcome.get('error') or outcome.get('exception', '')[:60] or 'ok'}", flush=True)
    path.write_text(json.dumps(result, indent=1, sort_keys=True))


def compare(before: Path, after: Path) -> int:
    """Print every case whose outcome differs; 0 when all are identical."""
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    differ = 0
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            differ += 1
            print(f"DIFFERS {name}\n  before: {json.dumps(a.get(name))[:600]}\n  after:  {json.dumps(b.get(name))[:600]}")
    print(f"{len(set(a) | set(b))} cases, {differ} differ")
    return 1 if differ else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["compare"] and len(argv) == 3:
        return compare(Path(argv[1]), Path(argv[2]))
    if argv[:1] == ["record"] and len(argv) >= 2:
        record(Path(argv[1]), argv[2:] or list(GROUPS))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
