"""The studio's static files (from ``web_demo/``) and the troubleshooting page.

Example:
    >>> "studio.html" in STATIC_FILES
    True
    >>> '<h3 id="bad_option">' in troubleshooting_html("### `BAD_OPTION`\\ntext")
    True
"""
from __future__ import annotations

import html
import re
from pathlib import Path

from topology.vocabulary.errors import ConversionError
from writer.resources import resource_path

STATIC_FILES = ("studio.html", "studio.js", "studio-test.js", "studio.css", "common.js")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".wasm": "application/wasm", ".json": "application/json",
                 ".md": "text/plain; charset=utf-8"}


def web_demo_dir() -> Path:
    """Where ``web_demo/`` is (packaged resources; the checkout's folder in a clone), as the demo finds it.

    Example:
        >>> (web_demo_dir() / "studio.html").is_file()
        True
    """
    return resource_path("web_demo")


def troubleshooting_path() -> Path | None:
    """docs/troubleshooting.md (packaged with the wheel, the checkout's in a clone); ``None`` when missing.

    Example:
        >>> troubleshooting_path().name
        'troubleshooting.md'
    """
    try:
        return resource_path("docs", "troubleshooting.md")
    except ConversionError:  # a damaged installation: the page says so instead
        return None


def static_file(route: str) -> Path | None:
    """The file behind a URL path: one of :data:`STATIC_FILES` or a regular file directly in ``vendor/``."""
    site = web_demo_dir()
    name = route.lstrip("/") or "studio.html"
    if name in STATIC_FILES:
        return site / name
    folder, _, leaf = name.partition("/")
    if folder == "vendor" and re.fullmatch(r"[A-Za-z0-9._-]{1,255}", leaf) and not leaf.startswith("."):
        candidate = site / "vendor" / leaf
        return candidate if candidate.is_file() else None
    return None


def _inline(text: str) -> str:
    parts = text.split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def troubleshooting_html(markdown: str) -> str:
    """docs/troubleshooting.md as a plain HTML page whose error codes are anchors (``#bad_option``)."""
    body, para = [], []

    def flush() -> None:
        if para:
            body.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    for line in markdown.splitlines():
        heading = re.match(r"^(#{1,3}) (.*)$", line)
        if heading:
            flush()
            level, text = len(heading.group(1)), heading.group(2)
            code = re.fullmatch(r"`([A-Z0-9_]+)`", text)
            anchor = f' id="{code.group(1).lower()}"' if code else ""
            body.append(f"<h{level}{anchor}>{_inline(text)}</h{level}>")
        elif line.strip():
            para.append(line.strip())
        else:
            flush()
    flush()
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Troubleshooting · flax2tfjs"
            "</title><link rel=\"stylesheet\" href=\"studio.css\"></head><body class=\"doc\"><main>"
            + "\n".join(body) + "</main></body></html>")
