"""Hints and notices phrased for the studio page: each CLI flag becomes the control that sets it.

The engine's hints speak command line ("pass --force", "(override with --activation)"); the
studio sends them unchanged as ``hint`` (what the CLI prints) and, when the wording differs, as
``page_hint`` / ``page_message`` with every flag the page has a control for named by that control
("tick “Replace the folder if it is not empty”"). A flag the page has no control for stays, marked
"on the command line". ``controls`` lists the element ids the text names, so the page can open
and offer them.

Example:
    >>> page_text("choose a new folder, or pass --force to replace an earlier conversion in it")
    'choose a new folder, or tick “Replace the folder if it is not empty” to replace an earlier conversion in it'
    >>> page_text("relu after every layer (override with --activation)")
    'relu after every layer (override with “Activation” under “Model code and input”)'
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from topology.infer import POOL_CHOICES, TEMPLATE_ACTIVATIONS


@dataclass(frozen=True)
class Control:
    """A control of the studio page that sets what a CLI flag sets."""

    element: str  # the id of the element in studio.html
    label: str  # its visible label, as the hint names it
    verb: str  # what the user does to it: "tick", "choose", "fill in"
    takes_value: bool = True


_MODEL = " under “Model code and input”"
CONTROLS: dict[str, Control] = {
    "--force": Control("force", "“Replace the folder if it is not empty”", "tick", takes_value=False),
    "--module": Control("module", f"“Module”{_MODEL}", "fill in"),
    "--input-shape": Control("input-shape", f"“Input shape”{_MODEL}", "fill in"),
    "--input-dtype": Control("input-dtype", f"“Input dtype”{_MODEL}", "choose"),
    "--activation": Control("activation", f"“Activation”{_MODEL}", "choose"),
    "--pool": Control("pool", f"“Pooling”{_MODEL}", "choose"),
    "--step": Control("step", f"“Step”{_MODEL}", "fill in"),
    "--quantize": Control("quantize", "“Weights”", "choose"),
    "--weight-shard-size-bytes": Control("shard-mib", "“Shard size (MiB)”", "fill in"),
    "--preset": Control("preset", "“Deployment preset”", "choose"),
    "--metadata": Control("metadata", "“Metadata”", "fill in"),
    "--allow-nonfinite": Control("allow-nonfinite", "“Write NaN/Inf weights anyway”", "tick", takes_value=False),
    "--optimize": Control("optimize", "“Optimise the graph”", "tick", takes_value=False),
    "--no-optimize": Control("optimize", "“Optimise the graph”", "untick", takes_value=False),
}
_FLAG = r"--[a-z][a-z0-9-]*"
# A flag's value: a token with a digit, a dot, a slash, a colon or "=" ("28,28,1", "model.py:CNN"),
# a placeholder in capitals ("N"), or a known choice ("relu", "uint8"); not an ordinary word.
_WORDS = "|".join(sorted({*TEMPLATE_ACTIVATIONS, *POOL_CHOICES, "float32", "float16", "uint16", "uint8", "int32",
                          "web", "mobile"}, key=len, reverse=True))
_VALUE = rf"(?:[^\s,;()-][^\s,;()]*[0-9./:=][^\s,;()]*|[0-9][^\s,;()]*|[A-Z]+(?![\w])|(?:{_WORDS})(?![\w-]))"
_VERBED = re.compile(rf"\b(?:pass|add|use|give|set)\s+({_FLAG})(?:\s+({_VALUE}))?")
_WITH = re.compile(rf"\bwith\s+({_FLAG})\b")
_BARE = re.compile(rf"(?<![\w-])({_FLAG})(?:\s+({_VALUE}))?")
# Flags of the studio command itself and pip's are about restarting or reinstalling: left as they are.
_LEAVE = {"--max-upload-mb", "--port", "--force-reinstall"}


def _named(flag: str, value: str | None) -> str:
    control = CONTROLS[flag]
    if value and control.takes_value and not value.startswith("--"):
        return f"{control.label} = {value}"
    return control.label + (f" {value}" if value else "")


def page_text(text: str) -> str:
    """``text`` with each flag the page has a control for replaced by that control (see module doc).

    Example:
        >>> page_text("pass --input-shape (e.g. --input-shape 224,224,3) and --pool")
        'fill in “Input shape” under “Model code and input” (e.g. “Input shape” under “Model code and input” = 224,224,3) and “Pooling” under “Model code and input”'
        >>> page_text("pass --no-fix to see the raw error")
        'pass --no-fix on the command line to see the raw error'
    """
    def verbed(match: re.Match) -> str:
        flag, value = match.group(1), match.group(2)
        if flag in _LEAVE:
            return match.group(0)
        if flag not in CONTROLS:
            return f"{match.group(0)} on the command line"
        control = CONTROLS[flag]
        if control.takes_value and value and not value.startswith("--"):
            return f"{control.verb} {control.label} with {value}"
        return f"{control.verb} {control.label}" + (f" {value}" if value else "")

    def bare(match: re.Match) -> str:
        flag, value = match.group(1), match.group(2)
        return _named(flag, value) if flag in CONTROLS else match.group(0)

    text = _VERBED.sub(verbed, text)
    text = _WITH.sub(lambda m: f"with {CONTROLS[m.group(1)].label}" if m.group(1) in CONTROLS else m.group(0), text)
    return _BARE.sub(bare, text)


def controls_named(text: str) -> list[str]:
    """Element ids of the controls whose flags ``text`` mentions, in order, once each.

    Example:
        >>> controls_named("pass --force, or --force with --input-shape")
        ['force', 'input-shape']
    """
    ids: list[str] = []
    for flag in re.findall(rf"(?<![\w-]){_FLAG}", text):
        if flag in CONTROLS and CONTROLS[flag].element not in ids:
            ids.append(CONTROLS[flag].element)
    return ids
