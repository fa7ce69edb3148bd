"""The ``flax2tfjs`` command: checks that ``writer`` and ``topology`` are this distribution's, then runs the CLI.

The package installs two top-level packages with common names, ``writer`` and ``topology``.
Another distribution of either name installed into the same environment overwrites or shadows
them, and a folder or file of the user's named alike shadows them too; without a check that
shows up as an unrelated ``ImportError``. This module uses only the standard library, finds
both packages without importing them, and compares their location with the files the
``flax2tfjs`` distribution installed (its ``RECORD``). In a source checkout (run from the
repository or installed editable) the packages next to ``pyproject.toml`` are accepted.

Example:
    >>> [problem for problem in foreign_packages()]   # this checkout's writer and topology
    []
"""
from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import sys
from pathlib import Path

OWN_PACKAGES = ("writer", "topology")
DISTRIBUTION = "flax2tfjs"


def _installed_files(site: Path) -> dict[Path, str | None]:
    """The ``__init__.py`` files the flax2tfjs distribution installed into ``site``, with their RECORD
    sha256 (empty when it is not installed there). Its RECORD is read directly: importing
    importlib.metadata and scanning every distribution would cost every run about 10 ms."""
    for info in sorted(site.glob(f"{DISTRIBUTION}-*.dist-info")):
        try:
            rows = list(csv.reader((info / "RECORD").read_text(encoding="utf-8").splitlines()))
        except OSError:
            continue
        return {(site / row[0]).resolve(): row[1].split("=", 1)[1] if len(row) > 1 and "=" in row[1] else None
                for row in rows if row and row[0].endswith("__init__.py")}
    return {}


def _unchanged(path: Path, recorded: str | None) -> bool:
    """Whether ``path`` still holds what the RECORD says (another distribution may have overwritten it)."""
    if recorded is None:
        return True
    try:
        digest = hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return False
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == recorded


def _in_source_checkout(init: Path) -> bool:
    """``writer/__init__.py`` of a flax2tfjs checkout: beside a pyproject.toml naming this project."""
    pyproject = init.parent.parent / "pyproject.toml"
    try:
        return pyproject.is_file() and f'name = "{DISTRIBUTION}"' in pyproject.read_text(encoding="utf-8")
    except OSError:
        return False


def _owner(init: Path, skip: str) -> str | None:
    """The installed distribution (name and version) other than ``skip`` whose RECORD lists ``init``, if any."""
    import importlib.metadata  # only when something is wrong: scanning every distribution is slow

    for dist in importlib.metadata.distributions():
        if (dist.metadata["Name"] or "").lower() == skip:
            continue
        for f in dist.files or []:
            if str(f).endswith("__init__.py") and Path(dist.locate_file(f)).resolve() == init:
                return f"{dist.metadata['Name']} {dist.version}"
    return None


def foreign_packages() -> list[str]:
    """One sentence per package of ours that resolves to someone else's code; empty when all is well.

    Example:
        >>> foreign_packages()
        []
    """
    problems = []
    for name in OWN_PACKAGES:
        spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
        origin = None if spec is None or not spec.origin or spec.origin in ("namespace", "built-in") else spec.origin
        if origin is None:
            where = ", ".join(spec.submodule_search_locations or []) if spec is not None else ""
            problems.append(f"the package '{name}' is missing" + (f" (a folder without __init__.py shadows it: {where})"
                                                                   if where else ""))
            continue
        init = Path(origin).resolve()
        if _in_source_checkout(init):
            continue
        installed = _installed_files(init.parent.parent if init.name == "__init__.py" else init.parent)
        if init in installed and _unchanged(init, installed[init]):
            continue
        owner = _owner(init, skip=DISTRIBUTION)
        location = init.parent if init.name == "__init__.py" else init
        problems.append(f"the '{name}' imported from {location} belongs to "
                        + (f"the distribution '{owner}'" if owner else "no installed distribution (a file or folder "
                                                                       "of yours with that name?)")
                        + ", not to flax2tfjs")
    return problems


def check_own_packages() -> int:
    """Print ``error[FOREIGN_PACKAGE]`` and return 2 when a package of ours is someone else's, else 0."""
    problems = foreign_packages()
    if not problems:
        return 0
    print("error[FOREIGN_PACKAGE]: " + "; ".join(problems), file=sys.stderr)
    print("hint: flax2tfjs installs the top-level packages 'writer' and 'topology': uninstall the other "
          "distribution (pip uninstall NAME) or rename your own file or folder, or give flax2tfjs its own "
          "environment (python -m venv, or pipx install flax2tfjs)", file=sys.stderr)
    return 2


def main() -> int:
    """The ``flax2tfjs`` console script (and ``python -m writer``): the check, then :func:`writer.cli.main`."""
    status = check_own_packages()
    if status:
        return status
    from writer.cli import main as cli_main  # only once the check has passed: writer may be someone else's

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
