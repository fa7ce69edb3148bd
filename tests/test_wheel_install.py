"""flax2tfjs as a user gets it: built wheel, fresh virtualenv, run from a folder outside the checkout.

Builds the sdist and the wheel (``python -m build``: the wheel is built FROM the
sdist, so the sdist must carry every resource too), installs the wheel into a
new virtualenv without jax, and from a temporary folder runs convert, inspect
and ``--all-steps``, the demo server, and ``verify`` (first the coded error
without jax, then PASS after installing the ``[jax]`` extra; TF.js is the
packaged browser build, since there is no node_modules). Nothing here imports
the installed package into this interpreter: every step is a subprocess of
the virtualenv's own ``flax2tfjs``.

Slow by nature (about 100 s here, most of it pip installing jax); pip's cache
and the configured find-links make the second install cheap.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

RESOURCES = ["schemas/model.schema.json", "schemas/inspect.schema.json", "schemas/verify.schema.json",
             "web_demo/index.html", "web_demo/tester.html", "web_demo/model/model.json",
             "web_demo/model/group1-shard1of1.bin", "web_demo/vendor/tf.es2017.min.js",
             "web_demo/vendor/tf-backend-wasm.es2017.min.js", "web_demo/vendor/tfjs-backend-wasm.wasm",
             "web_demo/vendor/tfjs-backend-wasm-simd.wasm", "web_demo/vendor/tfjs-backend-wasm-threaded-simd.wasm",
             "js/tfjs_runner.mjs"]
TIMEOUT = 900


def run(cmd: list, cwd: Path, env: dict | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    # Build from a copy: setuptools writes flax2tfjs.egg-info into the source folder, and a stale
    # one in the checkout would feed old file lists into the next sdist.
    src = tmp_path_factory.mktemp("src") / "flax2tfjs"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "node_modules", ".venv*", "*.egg-info", "build", "dist", "__pycache__", ".pytest_cache",
        ".hypothesis", "test-artifacts", "out"))
    out = tmp_path_factory.mktemp("dist")
    ok(run([sys.executable, "-m", "build", "--outdir", out, src], cwd=out))
    return {"wheel": next(out.glob("flax2tfjs-*.whl")), "sdist": next(out.glob("flax2tfjs-*.tar.gz"))}


@pytest.fixture(scope="module")
def constraints(tmp_path_factory) -> Path:
    """Pin every dependency to the version this interpreter has, so pip takes it from its cache
    (or the configured find-links) instead of resolving and downloading newer releases."""
    from importlib.metadata import distributions

    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions()
                   if d.metadata["Name"] and d.metadata["Name"].lower() != "flax2tfjs"})
    path = tmp_path_factory.mktemp("pins") / "constraints.txt"
    path.write_text("\n".join(pins) + "\n")
    return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory, dist, constraints) -> dict:
    """A fresh virtualenv with the wheel (no extras) and a clean environment for its commands."""
    root = tmp_path_factory.mktemp("venv") / "env"
    ok(run([sys.executable, "-m", "venv", root], cwd=root.parent))
    bindir = root / ("Scripts" if os.name == "nt" else "bin")
    # As a user runs it: no FLAX2TFJS_SCHEMA_CHECK (the tests' full schema check needs the [schema] extra).
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "FLAX2TFJS_TFJS", "FLAX2TFJS_SCHEMA_CHECK")}
    env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", "")])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # --no-compile: byte-compiling jax and scipy would be most of the install time on 2 cores.
    pip = [bindir / "python", "-m", "pip", "install", "-q", "--no-compile", "-c", constraints]
    ok(run([*pip, dist["wheel"]], cwd=root.parent, env=env))
    return {"python": bindir / "python", "cli": bindir / "flax2tfjs", "env": env, "wheel": dist["wheel"], "pip": pip}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder outside the checkout with copies of the MNIST checkpoint and a CheckpointManager folder."""
    import orbax.checkpoint as ocp

    from bench import checkpoints

    work = tmp_path_factory.mktemp("user")
    assert ROOT not in work.parents
    shutil.copytree(ROOT / "examples" / "mnist_ckpt", work / "mnist_ckpt")
    with ocp.CheckpointManager(work / "run") as mgr:
        for k, step in enumerate((100, 200)):
            mgr.save(step, args=ocp.args.StandardSave(checkpoints.materialize(checkpoints.mlp_tree(8, 2, seed=k))))
        mgr.wait_until_finished()
    return work


def test_sdist_carries_every_resource(dist):
    with tarfile.open(dist["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = [r for r in RESOURCES + ["MANIFEST.in", "writer/py.typed", "writer/resources/__init__.py"]
               if r not in names]
    assert not missing, f"sdist lacks {missing}"


def test_wheel_carries_resources_and_never_the_tests(dist):
    with zipfile.ZipFile(dist["wheel"]) as whl:
        names = set(whl.namelist())
        sources = {n: whl.read(n).decode("utf-8") for n in names if n.endswith(".py")}
    missing = [r for r in RESOURCES + ["writer/py.typed", "topology/py.typed"]
               if r not in names and f"writer/resources/{r}" not in names]
    assert not missing, f"wheel lacks {missing}"
    assert not {n.split("/")[0] for n in names} & {"tests", "bench", "schemas", "web_demo", "js", "examples"}
    pattern = re.compile(r"^\s*(from|import)\s+(tests|bench)\b", re.M)
    offenders = [n for n, text in sources.items() if pattern.search(text)]
    assert not offenders, f"the installed package imports the test suite or benchmarks: {offenders}"
    # The wheel's web_demo is the checkout's, byte for byte (demo pages, model, TF.js bundle).
    with zipfile.ZipFile(dist["wheel"]) as whl:
        for name in ("web_demo/model/model.json", "web_demo/vendor/tf.es2017.min.js"):
            assert whl.read(f"writer/resources/{name}") == (ROOT / name).read_bytes()


def test_convert_inspect_and_all_steps_outside_the_checkout(venv, workdir):
    cli, env = venv["cli"], venv["env"]
    # The core install converts without msgpack (our own reader) and jsonschema (the [schema] extra).
    absent = ok(run([venv["python"], "-c", "import importlib.util as u; "
                     "print([m for m in ('msgpack', 'jsonschema') if u.find_spec(m) is None])"], cwd=workdir, env=env))
    assert absent.stdout.strip() == "['msgpack', 'jsonschema']"
    proc = ok(run([cli, "mnist_ckpt", "out"], cwd=workdir, env=env))
    assert "824,458 parameters" in proc.stdout
    document = json.loads((workdir / "out" / "model.json").read_text())
    assert document["format"] == "layers-model" and (workdir / "out" / "group1-shard1of1.bin").is_file()
    report = json.loads(ok(run([cli, "inspect", "mnist_ckpt", "--json"], cwd=workdir, env=env)).stdout)
    assert report["format"] == "orbax" and report["totals"]["params"] == 824458 and report["graph_error"] is None
    ok(run([cli, "inspect", "run"], cwd=workdir, env=env))  # newest step of the manager
    proc = ok(run([cli, "run", "steps", "--all-steps"], cwd=workdir, env=env))
    assert sorted(p.name for p in (workdir / "steps").iterdir()) == ["step_100", "step_200"]
    assert "2 step(s) converted" in proc.stdout and re.search(r"^\s+200\s+step_200/", proc.stdout, re.M)
    schema = run([cli, "mnist_ckpt", "out_schema"], cwd=workdir, env={**env, "FLAX2TFJS_SCHEMA_CHECK": "1"})
    assert schema.returncode == 2 and schema.stderr.startswith("error[JSONSCHEMA_NOT_INSTALLED]")  # not a core dependency
    assert 'pip install "flax2tfjs[schema]"' in schema.stderr and not (workdir / "out_schema").exists()
    quiet = ok(run([cli, "run", "steps_q", "--all-steps", "-q"], cwd=workdir, env=env))
    assert quiet.stdout == "" and (workdir / "steps_q" / "step_100" / "model.json").is_file()
    # Same input, same bytes: the installed package writes what the checkout writes.
    assert (workdir / "steps" / "step_200" / "model.json").read_bytes() == \
        (workdir / "steps_q" / "step_200" / "model.json").read_bytes()


def _served_url(proc: subprocess.Popen, pattern: str) -> str:
    """The URL a server started by the installed command prints (group 1 of ``pattern``), within 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(pattern, line)
        if match:
            return match.group(1)
    pytest.fail(f"no URL printed; stderr: {proc.stderr.read() if proc.poll() is not None else ''}")


def test_demo_server_serves_the_packaged_site(venv, workdir):
    proc = subprocess.Popen([str(venv["cli"]), "demo", "--port", "0"], cwd=workdir, env=venv["env"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = _served_url(proc, r"demo:\s+(http://127\.0\.0\.1:\d+/)")
        for path, local in (("", "index.html"), ("tester.html", "tester.html"), ("model/model.json", "model/model.json")):
            with urllib.request.urlopen(base + path, timeout=30) as response:
                assert response.status == 200
                assert response.read() == (ROOT / "web_demo" / local).read_bytes()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_verify_needs_the_jax_extra_then_passes_with_the_packaged_tfjs(venv, workdir):
    cli, env = venv["cli"], venv["env"]
    if not (workdir / "out").is_dir():
        ok(run([cli, "mnist_ckpt", "out"], cwd=workdir, env=env))
    missing = run([cli, "verify", "out", "mnist_ckpt"], cwd=workdir, env=env)
    assert missing.returncode == 2, missing.stderr
    assert "error[JAX_NOT_INSTALLED]" in missing.stderr and 'pip install "flax2tfjs[jax]"' in missing.stderr
    assert "INTERNAL" not in missing.stderr and "Traceback" not in missing.stderr
    module = run([cli, "mnist_ckpt", "out_m", "--module", "model.py:CNN"], cwd=workdir, env=env)
    assert module.returncode == 2 and "error[JAX_NOT_INSTALLED]" in module.stderr
    assert not (workdir / "out_m").exists()

    started = time.perf_counter()
    ok(run([*venv["pip"], f"{venv['wheel']}[jax]"], cwd=workdir, env=env))
    print(f"pip install [jax]: {time.perf_counter() - started:.1f} s")
    proc = ok(run([cli, "verify", "out", "mnist_ckpt", "--samples", "16"], cwd=workdir, env=env))
    assert "PASS" in proc.stdout and "TF.js 4.22.0 (wasm backend" in proc.stdout
    source = ok(run([venv["python"], "-c", "from writer.tfjs_node import TfjsRunner\n"
                     "with TfjsRunner() as r: print(r.source())"], cwd=workdir, env=env))
    assert source.stdout.strip() == "bundle"  # no node_modules: the packaged browser build ran
    no_node = run([cli, "verify", "out", "mnist_ckpt", "--samples", "4"], cwd=workdir,
                  env={**env, "PATH": str(Path(venv["python"]).parent)})
    assert no_node.returncode == 2 and "error[NODE_NOT_FOUND]" in no_node.stderr and "Node.js 18" in no_node.stderr


def test_help_names_the_installed_command(venv, workdir):
    usage = ok(run([venv["cli"], "inspect", "--help"], cwd=workdir, env=venv["env"])).stdout
    assert usage.startswith("usage: flax2tfjs inspect") and "python -m writer" not in usage
    module_form = ok(run([venv["python"], "-m", "writer", "--help"], cwd=workdir, env=venv["env"])).stdout
    assert module_form.startswith("usage: python -m writer [convert]")


def test_every_doc_a_hint_names_is_installed_and_the_studio_serves_the_guide(venv, workdir):
    package = Path(ok(run([venv["python"], "-c", "import writer, os; print(os.path.dirname(writer.__file__))"],
                          cwd=workdir, env=venv["env"])).stdout.strip())
    docs = package / "resources" / "docs"
    assert (docs / "troubleshooting.md").is_file() and (docs / "supported-layers.md").is_file()
    texts = {path: path.read_text(encoding="utf-8") for root in (package, package.parent / "topology")
             for path in root.rglob("*.py")}
    named = {(path.name, page) for path, text in texts.items() for page in re.findall(r"docs/([\w/.-]+\.md)", text)}
    assert named, "the scan finds the pages hints name"
    missing = sorted((where, page) for where, page in named if not (docs / page).is_file())
    assert not missing, f"hints name docs the installation lacks: {missing}"
    # A script of the repository is only ever named as something a checkout has.
    for path, text in texts.items():
        for match in re.finditer(r"scripts/\w+\.(?:sh|py)", text):
            if "checkout" not in text[max(0, match.start() - 160):match.start()]:
                pytest.fail(f"{path.name}: names {match.group()} without saying that a checkout has it")
    proc = subprocess.Popen([str(venv["cli"]), "studio", str(workdir), "--port", "0"], cwd=workdir, env=venv["env"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = _served_url(proc, r"(http://127\.0\.0\.1:\d+/)")
        with urllib.request.urlopen(base + "troubleshooting", timeout=30) as response:
            page = response.read().decode("utf-8")
        assert 'id="foreign_package"' in page and 'id="bad_option"' in page and "does not include" not in page
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_a_foreign_writer_distribution_is_named_not_imported(venv, workdir, tmp_path):
    """A distribution called `writer` (the public index has one) installed beside flax2tfjs.

    Laid out as pip installs a wheel (the package plus a dist-info with METADATA and RECORD) into a
    folder earlier on sys.path than the virtualenv's site-packages."""
    target = tmp_path / "site"
    (target / "writer").mkdir(parents=True)
    (target / "writer" / "__init__.py").write_text("raise SystemExit('the foreign writer ran')\n")
    info = target / "writer-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: writer\nVersion: 0.0.1\n")
    (info / "RECORD").write_text("writer/__init__.py,,\nwriter-0.0.1.dist-info/METADATA,,\nwriter-0.0.1.dist-info/RECORD,,\n")
    env = {**venv["env"], "PYTHONPATH": str(target)}  # earlier on sys.path than the venv's site-packages
    clash = run([venv["cli"], "mnist_ckpt", "out_foreign"], cwd=workdir, env=env)
    assert clash.returncode == 2 and clash.stdout == "", clash.stderr
    assert clash.stderr.startswith(f"error[FOREIGN_PACKAGE]: the 'writer' imported from {target / 'writer'} "
                                   "belongs to the distribution 'writer 0.0.1', not to flax2tfjs")
    assert "hint: " in clash.stderr and "the foreign writer ran" not in clash.stderr
    assert not (workdir / "out_foreign").exists()
    # Installed into the same site-packages, it overwrites our writer/__init__.py: the RECORD's hash says so.
    package = Path(ok(run([venv["python"], "-c", "import writer, os; print(os.path.dirname(writer.__file__))"],
                          cwd=workdir, env=venv["env"])).stdout.strip())
    ours = (package / "__init__.py").read_bytes()
    installed_info = package.parent / "writer-0.0.1.dist-info"
    shutil.copytree(info, installed_info)
    try:
        (package / "__init__.py").write_text("raise SystemExit('the foreign writer ran')\n")
        overwritten = run([venv["cli"], "--version"], cwd=workdir, env=venv["env"])
        assert overwritten.returncode == 2 and overwritten.stderr.startswith(
            f"error[FOREIGN_PACKAGE]: the 'writer' imported from {package} belongs to the distribution 'writer 0.0.1'")
    finally:
        (package / "__init__.py").write_bytes(ours)
        shutil.rmtree(installed_info)
    ok(run([venv["cli"], "--version"], cwd=workdir, env=venv["env"]))  # restored: ours again
