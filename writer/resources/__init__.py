"""The package's non-Python files (JSON schemas, web demo, Node runner, docs), found with importlib.resources.

The repository keeps them in top-level folders (``schemas/``, ``web_demo/``,
``js/``, ``docs/``: the Markdown pages, so the studio serves the troubleshooting guide and every
doc page a hint names is in the installation too); the wheel and the sdist map those folders into this package at build
time (``[tool.setuptools.package-dir]`` in pyproject.toml), so an installed
flax2tfjs reads ``writer/resources/web_demo/...`` from site-packages. In a
source checkout the same names resolve to the top-level folders: this
package's ``__path__`` also lists the checkout root, so importlib.resources
finds ``writer.resources.web_demo`` there. Either way every read goes through
:func:`files` (importlib.resources), never through a path computed from
``__file__`` by the callers.

Example:
    >>> (files("schemas") / "model.schema.json").is_file()
    True
    >>> resource_path("web_demo", "index.html").name
    'index.html'
"""
from __future__ import annotations

import importlib.resources
from importlib.abc import Traversable
from pathlib import Path

from topology.vocabulary.errors import ConversionError

KINDS = ("schemas", "web_demo", "js", "docs")

# Source checkout only (editable installs, pytest): the top-level folders sit two levels up.
# An installed wheel has the folders inside this package and no pyproject.toml there.
_CHECKOUT = Path(__file__).resolve().parents[2]
IN_CHECKOUT = (_CHECKOUT / "pyproject.toml").is_file() and all((_CHECKOUT / kind).is_dir() for kind in KINDS)
if IN_CHECKOUT:
    __path__.append(str(_CHECKOUT))  # type: ignore[name-defined]  # noqa: F821


def checkout_root() -> Path | None:
    """The source checkout this package runs from, or ``None`` when installed (from a wheel).

    Example:
        >>> checkout_root() is None or (checkout_root() / "pyproject.toml").is_file()
        True
    """
    return _CHECKOUT if IN_CHECKOUT else None


def files(kind: str) -> Traversable:
    """The folder of one kind of resource (``"schemas"``, ``"web_demo"`` or ``"js"``).

    Example:
        >>> sorted(p.name for p in files("schemas").iterdir() if p.name == "model.schema.json")
        ['model.schema.json']
    """
    if kind not in KINDS:
        raise ValueError(f"unknown resource kind {kind!r} (expected one of {', '.join(KINDS)})")
    try:
        return importlib.resources.files(f"{__name__}.{kind}")
    except ModuleNotFoundError:
        raise ConversionError("RESOURCE_MISSING", f"the {kind}/ files of flax2tfjs are not installed",
                              'reinstall the package: pip install --force-reinstall flax2tfjs') from None


def resource_path(kind: str, *parts: str) -> Path:
    """A resource as a real file-system path (Node and the HTTP server need one).

    Wheels install unpacked, so the path exists on disk; a missing file is a
    broken installation and raises ``RESOURCE_MISSING``.

    Example:
        >>> resource_path("js", "tfjs_runner.mjs").suffix
        '.mjs'
    """
    node = files(kind)
    for part in parts or (".",):  # "." turns a namespace MultiplexedPath into a plain path
        node = node / part
    path = Path(str(node)).resolve()
    if not path.exists():
        where = "/".join((kind, *parts))
        raise ConversionError("RESOURCE_MISSING", f"{where} is missing from the flax2tfjs installation ({path})",
                              "reinstall the package: pip install --force-reinstall flax2tfjs")
    return path
