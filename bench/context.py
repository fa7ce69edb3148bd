"""What every benchmark section needs: paths, run counts, a scratch folder, a logger."""
from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from bench.measure import RunResult, run

ROOT = Path(__file__).resolve().parent.parent
# The official converter's virtualenv (scripts/setup_tfjs_venv.sh); $FLAX2TFJS_TFJS_VENV points elsewhere.
OFFICIAL_VENV = Path(os.environ.get("FLAX2TFJS_TFJS_VENV") or ROOT / ".venv-tfjs")
OFFICIAL_PYTHON = OFFICIAL_VENV / "bin" / "python"
OFFICIAL_CONVERTER = OFFICIAL_VENV / "bin" / "tensorflowjs_converter"


class BenchError(RuntimeError):
    """A benchmarked command failed; the message carries its stderr tail.

    Example:
        >>> str(BenchError("conversion failed"))
        'conversion failed'
    """


@dataclass
class Context:
    """Settings shared by the sections.

    Example:
        >>> ctx = Context(Path("/tmp"), quick=True); ctx.runs(7)
        2
    """

    scratch: Path  # GB-sized files go here; deleted at the end
    quick: bool = False
    python: str = sys.executable
    verbose: bool = True
    started: float = field(default_factory=time.perf_counter)

    def runs(self, full: int) -> int:
        """How many repeats: ``full`` normally, 2 in quick mode."""
        return min(full, 2) if self.quick else full

    def log(self, message: str) -> None:
        if self.verbose:
            print(f"[bench {time.perf_counter() - self.started:7.1f}s] {message}", file=sys.stderr, flush=True)

    def path(self, name: str) -> Path:
        """A fresh path in the scratch folder (anything there before is removed)."""
        target = self.scratch / name
        remove(target)
        return target

    def writer(self, checkpoint: Path, out: Path, *extra: str) -> list[str]:
        """The measured command: the whole ``python -m writer`` process."""
        return [self.python, "-m", "writer", str(checkpoint), str(out), "--quiet", *extra]

    @property
    def pycache(self) -> Path:
        """Bytecode cache of the children, kept out of the source tree (PYTHONPYCACHEPREFIX)."""
        return self.scratch / "pycache"

    def env(self, bytecode_cache: bool = True) -> dict:
        return child_env(self.pycache if bytecode_cache else None)

    def run_ok(self, cmd: Sequence[str], what: str, timeout: float = 1800, bytecode_cache: bool = True) -> RunResult:
        """Run from the repository root; raise :class:`BenchError` if it fails."""
        result = run(cmd, cwd=ROOT, env=self.env(bytecode_cache), timeout=timeout)
        if not result.ok:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise BenchError(f"{what} failed (exit {result.returncode}): {' '.join(map(str, cmd))}\n{tail}")
        return result


def child_env(pycache: Path | None = None) -> dict:
    """The environment for children: the repo importable, jax on CPU, quiet TensorFlow.

    With ``pycache``, Python writes and reuses bytecode there, as an installed package or a
    clone run twice would (some sandboxes set PYTHONDONTWRITEBYTECODE=1, which makes every
    run recompile the project's modules); without, bytecode is never cached.
    """
    env = dict(os.environ)
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env.pop("FLAX2TFJS_SCHEMA_CHECK", None)  # the test suite's full schema check: not what users run
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def remove(path: Path) -> None:
    """Delete a file or folder if it exists.

    Example:
        >>> remove(Path("/nonexistent/x"))
    """
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def folder_bytes(path: Path) -> int:
    """Total size of a file, or of every file under a folder.

    Example:
        >>> folder_bytes(Path("/nonexistent"))
        0
    """
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0
