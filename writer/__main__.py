"""``python -m writer``: see :mod:`writer.cli`."""
import sys

from writer.cli import main

sys.exit(main())
