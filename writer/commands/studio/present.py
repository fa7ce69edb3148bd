"""What the page is sent: absolute server paths shown relative to ROOT, hints phrased for the page.

Every JSON answer and every Server-Sent Event goes through :func:`for_page`. Paths under ROOT
become relative (``ROOT/ckpts/mnist_tfjs`` -> ``ckpts/mnist_tfjs``, ROOT itself -> ``.``), an
uploaded file becomes its ``upload:ID/NAME`` handle, and any other absolute path of three or more
parts keeps only its last one (``…/site.py``), so no error banner, notice or report leaks where
the studio runs (a short one such as ``/etc/passwd`` is kept: it is what the user typed). A dict with a
``hint`` gains ``page_hint`` and ``controls``, a notice (``kind``, ``code``, ``message``) gains
``page_message`` (see :mod:`writer.commands.studio.page_hints`); the CLI wording stays in ``hint`` and
``message``.

Example:
    >>> p = Presenter(Path("/srv/models"), Path("/tmp/f2t-up"))
    >>> p.text("no file at /srv/models/ckpts/a.npz; /srv/models is ROOT; /tmp/f2t-up/0a1b/x.npz uploaded")
    'no file at ckpts/a.npz; . is ROOT; upload:0a1b/x.npz uploaded'
    >>> p.text("/etc/passwd is outside; see /usr/lib/python3/site.py")
    '/etc/passwd is outside; see …/site.py'
    >>> p.for_page({"code": "OUTPUT_NOT_EMPTY", "message": "/srv/models/out", "hint": "pass --force"})["page_hint"]
    'tick “Replace the folder if it is not empty”'
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from writer.commands.studio.page_hints import controls_named, page_text

_UNIX_PATH = re.compile(r"(?<![\w.:/#-])/(?:[^\s'\",;:()\[\]]+/)*[^\s'\",;:()\[\]/]+")
_KEEP = ("doc",)  # links into the studio itself (/troubleshooting#code)


class Presenter:
    """Rewrites text for the page, knowing ROOT and the uploads folder."""

    def __init__(self, root: Path, uploads: Path) -> None:
        prefixes = {str(root): ".", str(Path(root).resolve()): ".",
                    str(uploads): "upload:", str(Path(uploads).resolve()): "upload:"}
        # Known folders are matched literally (they may hold spaces), the most specific first,
        # and only as whole path components (ROOT "/srv/m" leaves "/srv/m2" alone).
        self._known = [(re.compile(re.escape(prefix) + r"(?![^/\s'\",;:()\[\]])(/[^\s'\",;:()\[\]]*)?"), shown)
                       for prefix, shown in sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True)]

    @staticmethod
    def _elsewhere(match: re.Match) -> str:
        parts = match.group(0).strip("/").split("/")
        # Elsewhere on the server (a library, a temporary folder): its last part only. A short
        # path such as /etc/passwd is more likely what the user typed, and is kept.
        return f"…/{parts[-1]}" if len(parts) >= 3 else match.group(0)

    def text(self, text: str) -> str:
        """``text`` with every absolute path made relative (see the module doc)."""
        if "/" not in text:
            return text
        for pattern, shown in self._known:
            def relative(match: re.Match, shown: str = shown) -> str:
                rest = (match.group(1) or "").strip("/")
                return (shown + rest if shown == "upload:" else rest) if rest else shown
            text = pattern.sub(relative, text)
        return _UNIX_PATH.sub(self._elsewhere, text)

    def for_page(self, value: Any) -> Any:
        """A JSON value with paths relativised in every string and page wording added (see the module doc)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.for_page(v) for v in value]
        if not isinstance(value, dict):
            return value
        out = {k: v if k in _KEEP else self.for_page(v) for k, v in value.items()}
        if isinstance(out.get("hint"), str) and "page_hint" not in out:
            out["page_hint"] = page_text(out["hint"])
            out["controls"] = controls_named(out["hint"])
        if {"kind", "code", "message"} <= out.keys() and isinstance(out["message"], str) and "page_message" not in out:
            out["page_message"] = page_text(out["message"])
        return out
