"""``python -m writer``: the same program as the ``flax2tfjs`` command, with its package check (:mod:`flax2tfjs`)."""
import sys

from flax2tfjs import main

sys.exit(main())
