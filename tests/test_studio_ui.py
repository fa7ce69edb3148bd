"""The studio's page-facing rules that need no server: one size formatter for CLI and page, hints
that name the page's controls instead of CLI flags, paths shown relative to ROOT, the classes of a
model file, and a default output folder that does not collide.

(The page itself, in real Chromium against the real server, is tests/test_studio.py.)
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from topology.vocabulary.errors import ConversionError
from writer.commands.studio.classes import module_classes
from writer.commands.studio.page_hints import CONTROLS, controls_named, page_text
from writer.commands.studio.paths import Root
from writer.commands.studio.present import Presenter
from writer.term import human_bytes

SIZES = [0, 1, 512, 1023, 1024, 1075, 1126, 1280, 1331, 1536, 10 * 1024 - 1, 824_458, 1_048_575, 1_048_576,
         1_310_720, 1_363_149, 1_648_916, 3_297_832, 3_300_000, 104_857_600 - 1, 1 << 30, 3 << 29, 5_368_709_120,
         (1 << 40) + 12345]


def test_page_formats_sizes_exactly_as_the_cli():
    """common.js formatBytes against writer.term.human_bytes, ties included (1280 B = 1.25 KiB:
    Python rounds to even, "1.2 KiB"; toFixed would say "1.3 KiB")."""
    script = ("globalThis.window = globalThis; globalThis.document = {};"
              f"require({json.dumps(str(ROOT / 'web_demo' / 'common.js'))});"
              f"console.log(JSON.stringify({json.dumps(SIZES)}.map((n) => F2T.formatBytes(n))));")
    proc = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    page = json.loads(proc.stdout)
    assert page == [human_bytes(n) for n in SIZES]
    assert page[SIZES.index(1280)] == "1.2 KiB" and page[SIZES.index(3_297_832)] == "3.1 MiB"


def _string_constants(folder: Path) -> list[str]:
    texts = []
    for file in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                texts.append(node.value)
            elif isinstance(node, ast.JoinedStr):  # f-strings: their literal parts
                texts.append("".join(v.value for v in node.values if isinstance(v, ast.Constant)))
    return texts


def test_every_engine_text_names_the_page_control_for_its_flags():
    """Every string of the engine that mentions a flag the page has a control for loses the flag in
    the page's wording; a flag without a control is marked "on the command line" after a verb."""
    texts = [t for t in _string_constants(ROOT / "writer") + _string_constants(ROOT / "topology")
             if re.search(r"(?<![\w-])--[a-z]", t) and "studio" not in t]
    assert len(texts) > 20
    checked = 0
    for text in texts:
        shown = page_text(text)
        for flag in CONTROLS:
            assert not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", shown), (text, shown)
        if re.search(r"\bpass --", text) and not any(f in text for f in CONTROLS):
            assert "on the command line" in shown, (text, shown)
        checked += bool(controls_named(text))
    assert checked > 10


@pytest.mark.parametrize("hint,expected,controls", [
    ("choose a new folder, or pass --force to replace an earlier conversion in it",
     "choose a new folder, or tick “Replace the folder if it is not empty” to replace an earlier conversion in it", ["force"]),
    ("use --step N for one step", "fill in “Step” under “Model code and input” with N for one step", ["step"]),
    ("--activation tanh is not one the template can write exactly",
     "“Activation” under “Model code and input” = tanh is not one the template can write exactly", ["activation"]),
    ("restart the studio with a larger --max-upload-mb", "restart the studio with a larger --max-upload-mb", []),
    ("pass --no-fix to see it", "pass --no-fix on the command line to see it", []),
    ("--all-steps and --step exclude each other", "--all-steps and “Step” under “Model code and input” exclude each other",
     ["step"]),
    ("pass --input-shape (e.g. --input-shape 224,224,3) and --pool max",
     "fill in “Input shape” under “Model code and input” (e.g. “Input shape” under “Model code and input” = 224,224,3) "
     "and “Pooling” under “Model code and input” = max", ["input-shape", "pool"]),
])
def test_page_hints(hint, expected, controls):
    assert page_text(hint) == expected and controls_named(hint) == controls


def test_presenter_hides_server_paths(tmp_path):
    root, uploads = tmp_path / "my root", tmp_path / "uploads"
    root.mkdir()
    uploads.mkdir()
    (tmp_path / "link").symlink_to(root)
    present = Presenter(tmp_path / "link", uploads)  # the folder as given and as resolved
    err = ConversionError("OUTPUT_NOT_EMPTY", f"output folder {root}/out is not empty ({tmp_path / 'link'}/out)",
                          "pass --force")
    event = present.for_page({"type": "error", "code": err.code, "message": err.message, "hint": err.hint,
                              "doc": "/troubleshooting#output_not_empty",
                              "report": {"files": [f"{uploads}/0123/a.npz", str(root)]}})
    assert event["message"] == "output folder out is not empty (out)"
    assert event["report"]["files"] == ["upload:0123/a.npz", "."]
    assert event["doc"] == "/troubleshooting#output_not_empty"  # links are left alone
    assert event["hint"] == "pass --force" and event["page_hint"].startswith("tick “Replace")
    assert event["controls"] == ["force"]
    assert str(tmp_path) not in json.dumps(event)
    shown = present.text(f"{root}2/x and {root}/a/b.npz: bad")  # ROOT matches whole components only
    assert shown.endswith("root2/x and a/b.npz: bad") and not shown.startswith("2/x"), shown
    notice = present.for_page({"kind": "assumption", "code": "POOLING", "message": "avg (override with --pool)"})
    assert notice["page_message"] == "avg (override with “Pooling” under “Model code and input”)"


def test_classes_of_a_model_file():
    source = ("import flax.linen as nn\nfrom flax import linen\nclass Cfg: pass\nclass Block(linen.Module): pass\n"
              "class Net(Block): pass\nclass Gen(nn.Module, Generic[T]): pass\ndef f():\n    class Inner(nn.Module): pass\n")
    assert module_classes(source) == ["Block", "Net", "Gen", "Cfg"]  # modules first, top level only
    with pytest.raises(ConversionError) as info:
        module_classes("class (:")
    assert info.value.code == "BAD_MODULE_SPEC" and "line 1" in info.value.message


def test_default_output_folder_does_not_collide(tmp_path):
    root = Root(tmp_path)
    assert root.free_output("ckpts/mnist_ckpt/") == "ckpts/mnist_ckpt_tfjs"
    (tmp_path / "ckpts" / "mnist_ckpt_tfjs").mkdir(parents=True)
    (tmp_path / "ckpts" / "mnist_ckpt_tfjs_2").write_text("a file counts too")
    assert root.free_output("ckpts/mnist_ckpt") == "ckpts/mnist_ckpt_tfjs_3"
    assert root.free_output("model.msgpack") == "model_tfjs"
    assert root.free_output(".") == f"{tmp_path.name}_tfjs"
    assert root.free_output("upload:0123456789abcdef/model.npz") == "model_tfjs"
    with pytest.raises(ConversionError) as info:
        root.free_output("../elsewhere")
    assert info.value.code == "PATH_OUTSIDE_ROOT"
