"""Fast checks of what an installed package needs (the slow end-to-end one is test_wheel_install.py).

Resources come through importlib.resources; the package never imports the test
suite; missing optional parts are coded errors naming the extra; ``--all-steps``
and ``-q`` work from the command line.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.conftest import ROOT
from writer.cli import main
from topology.vocabulary.errors import ConversionError


def _legacy_steps(folder, steps=(1, 5)):
    from bench import checkpoints

    folder.mkdir()
    for k, step in enumerate(steps):
        checkpoints.write_mlp_msgpack(folder / f"checkpoint_{step}", 8, 2, seed=k)
    return folder


# -- resources and imports ----------------------------------------------------------------------


def test_every_code_package_is_in_the_wheel_list():
    """pyproject lists packages by hand: a new sub-package left out breaks only the installed wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("writer", "topology")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found - listed == set(), f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"




def test_resources_resolve_to_the_checkout_folders():
    from writer.resources import files, resource_path

    assert (files("schemas") / "model.schema.json").read_bytes() == (ROOT / "schemas" / "model.schema.json").read_bytes()
    assert resource_path("web_demo", "vendor", "tf.es2017.min.js") == ROOT / "web_demo" / "vendor" / "tf.es2017.min.js"
    assert resource_path("js", "tfjs_runner.mjs") == ROOT / "js" / "tfjs_runner.mjs"
    with pytest.raises(ConversionError) as err:
        resource_path("web_demo", "no-such-page.html")
    assert err.value.code == "RESOURCE_MISSING" and "reinstall" in err.value.hint


def test_package_code_never_imports_tests_or_bench_or_source_paths():
    pattern = re.compile(r"^\s*(from|import)\s+(tests|bench)\b", re.M)
    offenders, relative = [], []
    for folder in ("writer", "topology"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if pattern.search(text):
                offenders.append(str(path.relative_to(ROOT)))
            # A data folder reached through __file__ breaks in a wheel: only writer/resources may know.
            if re.search(r"""parent\s*/\s*["'](schemas|web_demo|js)["']""", text):
                relative.append(str(path.relative_to(ROOT)))
    assert not offenders, f"installed modules import tests/bench: {offenders}"
    assert not relative, f"resources found through source-tree paths: {relative}"
    assert (ROOT / "writer" / "py.typed").is_file() and (ROOT / "topology" / "py.typed").is_file()


# -- optional parts -----------------------------------------------------------------------------


def test_verify_without_jax_names_the_extra(monkeypatch, tmp_path, capsys):
    import writer.extras

    assert main([str(ROOT / "examples" / "mnist_ckpt"), str(tmp_path / "out"), "-q"]) == 0
    monkeypatch.setattr(writer.extras, "jax_installed", lambda: False)
    assert main(["verify", str(tmp_path / "out"), str(ROOT / "examples" / "mnist_ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error[JAX_NOT_INSTALLED]") and 'pip install "flax2tfjs[jax]"' in err
    assert main([str(ROOT / "examples" / "mnist_ckpt"), str(tmp_path / "out2"), "--module", "m.py:CNN"]) == 2
    assert "error[JAX_NOT_INSTALLED]" in capsys.readouterr().err and not (tmp_path / "out2").exists()


@pytest.mark.parametrize("name, code, status", [("flax.linen", "JAX_NOT_INSTALLED", 2),
                                                ("tensorflow", "TENSORFLOW_NOT_INSTALLED", 2),
                                                ("no_such_thing", "INTERNAL", 1)])
def test_missing_optional_module_is_coded_never_internal(monkeypatch, capsys, name, code, status):
    import writer.cli as cli

    def boom(argv):
        raise ModuleNotFoundError(f"No module named '{name}'", name=name)

    monkeypatch.setitem(cli.COMMANDS, "inspect", boom)
    assert main(["inspect", "x"]) == status
    assert capsys.readouterr().err.startswith(f"error[{code}]")


# -- --all-steps and -q -------------------------------------------------------------------------


def test_all_steps_flag_writes_every_step_with_one_table(tmp_path, capsys):
    source = _legacy_steps(tmp_path / "ckpts")
    assert main([str(source), str(tmp_path / "out"), "--all-steps"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["step_1", "step_5"]
    assert out.count("step  folder") == 1 and re.search(r"^\s+5\s+step_5/\s+144\s", out, re.M)
    assert out.count("assumption[ACTIVATION]") == 1  # shared notices once, not per step
    assert "2 step(s) converted" in out
    # Each step holds its own weights (seed 0 vs 1), not copies of the newest.
    a = (tmp_path / "out" / "step_1" / "group1-shard1of1.bin").read_bytes()
    b = (tmp_path / "out" / "step_5" / "group1-shard1of1.bin").read_bytes()
    assert len(a) == len(b) and a != b


def test_all_steps_json_quiet_and_refusals(tmp_path, capsys):
    source = _legacy_steps(tmp_path / "ckpts")
    assert main([str(source), str(tmp_path / "q"), "--all-steps", "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert main([str(source), str(tmp_path / "j"), "--all-steps", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert sorted(document["steps"]) == ["1", "5"] and document["steps"]["5"]["step"] == 5
    for extra in (["--step", "1"], ["--verify"]):
        assert main([str(source), str(tmp_path / "r"), "--all-steps", *extra]) == 2
        assert "error[BAD_OPTION]" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main([str(ROOT / "examples" / "mnist_ckpt"), str(tmp_path / "s"), "--all-steps"]) == 2
    assert "error[STEP_NOT_FOUND]" in capsys.readouterr().err


def test_all_steps_progress_is_one_bar_across_steps(tmp_path):
    from writer.commands.convert.all_steps import convert_all_steps

    calls = []
    convert_all_steps(_legacy_steps(tmp_path / "ckpts"), tmp_path / "out",
                      progress=lambda name, written: calls.append((name, written)))
    steps = [name.split(":")[0] for name, _ in calls]
    assert steps[0] == "step 1" and steps[-1] == "step 5" and len(calls) == 2 * 4
    written = [w for _, w in calls]
    assert written == sorted(written) and written[-1] == 2 * written[3]  # bytes keep counting across steps
    assert np.all(np.diff(written) > 0)
