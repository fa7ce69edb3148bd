"""``python -m writer.demo [MODEL_DIR] [--port N]``: the ``demo`` command, started by module name.

The command lives in :mod:`writer.commands.demo` (its parser and its server); this launcher keeps
the spelling docs/web_demo.md gives working.

Example:
    >>> from writer.commands.demo import main
    >>> main is launched_main
    True
"""
from __future__ import annotations

import sys

from writer.commands.demo import main as launched_main

if __name__ == "__main__":
    sys.exit(launched_main(prog="python -m writer.demo"))
