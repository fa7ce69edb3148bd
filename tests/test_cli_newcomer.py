"""What a newcomer meets first: the program's name, the package check, and what --preset set."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT
from writer.cli import main

MNIST = ROOT / "examples" / "mnist_ckpt"


def _run(args: list[str], pythonpath: list, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_preset_is_in_the_report_and_in_model_json(tmp_path, capsys):
    assert main([str(MNIST), str(tmp_path / "m"), "--preset", "mobile", "--weight-shard-size-bytes", "500000"]) == 0
    out = capsys.readouterr().out
    assert "preset[mobile]: set --quantize uint8 --optimize; given explicitly instead: --weight-shard-size-bytes" in out
    recorded = json.loads((tmp_path / "m" / "model.json").read_text())["userDefinedMetadata"]["flax2tfjs"]["preset"]
    assert recorded == {"name": "mobile", "set": {"quantize": "uint8", "optimize": True},
                        "overridden": ["weight_shard_size_bytes"]}
    assert len(list((tmp_path / "m").glob("group1-shard*of2.bin"))) == 2  # the explicit shard size won
    assert main([str(MNIST), str(tmp_path / "plain"), "--quantize", "uint8", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["preset"] is None  # no preset, no preset key in model.json either
    assert "preset" not in json.loads((tmp_path / "plain" / "model.json").read_text())["userDefinedMetadata"]["flax2tfjs"]


def test_help_names_the_program_as_invoked():
    help_text = _run(["-m", "writer", "--help"], [ROOT]).stdout
    assert help_text.startswith("usage: python -m writer [convert]") and "flax2tfjs [convert]" not in help_text
    # The console script's argv[0] is .../bin/flax2tfjs (tests/test_wheel_install.py runs the real one).
    script = "import sys; sys.argv = ['/venv/bin/flax2tfjs', 'inspect', '--help']; import flax2tfjs; flax2tfjs.main()"
    assert _run(["-c", script], [ROOT]).stdout.startswith("usage: flax2tfjs inspect")


def test_a_foreign_writer_or_topology_stops_with_a_coded_error(tmp_path):
    (tmp_path / "writer").mkdir()
    (tmp_path / "writer" / "__init__.py").write_text("")  # a user's own writer package, earlier on the path
    (tmp_path / "topology.py").write_text("")
    script = "import sys, flax2tfjs; sys.argv = ['flax2tfjs', '--version']; sys.exit(flax2tfjs.main())"
    done = _run(["-c", script], [tmp_path, ROOT], cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    first, hint = done.stderr.splitlines()
    assert first.startswith("error[FOREIGN_PACKAGE]: the 'writer' imported from " + str(tmp_path / "writer"))
    assert f"the 'topology' imported from {tmp_path / 'topology.py'}" in first and "Traceback" not in done.stderr
    assert hint.startswith("hint: ") and "pip uninstall" in hint
    # This checkout's own packages are accepted (source checkout, no install needed).
    assert _run(["-m", "writer", "--version"], [ROOT]).stdout.startswith("flax2tfjs ")
