"""``python -m tests.corpus.report``: run the diagnostics corpus, print fix and clear-error rates.

The corpus (``tests/corpus``) builds broken inputs from small Flax models.
Fixable cases count as fixed only when the conversion reports its fixes and
the converted model predicts like JAX in real TF.js (Node); the others count
as clear errors only when they stop with the expected code, a message naming
what is wrong, a hint, and the output folder untouched. Needs the
development setup (jax, flax, orbax, node + ``npm ci``); run it from the
repository root. It lives with the tests (not in ``writer/``) so the installed
package never imports the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[2]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the corpus (or the cases named with ``-k``); exit status 0 when every case passes.

    Example:
        >>> main(["-k", "nested-params"])   # doctest: +SKIP
        ok    nested-params: fixed
        ...
        0
    """
    parser = argparse.ArgumentParser(prog="python -m tests.corpus.report", description=__doc__.splitlines()[0])
    parser.add_argument("-k", action="append", default=[], metavar="TEXT", help="only cases whose name contains TEXT")
    parser.add_argument("--json", action="store_true", help="print the outcomes and rates as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="show each case's notices and error")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.corpus.cases import CASES
    from tests.corpus.runner import rates, run_case
    from writer.tfjs_node import TfjsRunner

    cases = [c for c in CASES if not args.k or any(text in c.name for text in args.k)]
    outcomes = []
    with TfjsRunner() as tfjs:
        for case in cases:
            with tempfile.TemporaryDirectory(prefix="flax2tfjs-corpus-") as folder:
                outcome = run_case(case, Path(folder), tfjs)
            outcomes.append(outcome)
            if not args.json:
                print(f"{outcome.line()}  [{outcome.seconds:.1f} s]", flush=True)
                if args.verbose:
                    for text in outcome.notices + outcome.error.splitlines():
                        print(f"        {text}")
    summary = rates(outcomes, cases)
    if args.json:
        print(json.dumps({"rates": summary, "outcomes": [
            {"case": o.name, "ok": o.ok, "got": o.got, "detail": o.detail, "seconds": round(o.seconds, 3)}
            for o in outcomes]}, indent=2))
    else:
        print(f"\ncorpus: {summary['cases']} broken inputs ({summary['fixable']} fixable, {summary['errors']} not)")
        print(f"fixed correctly (TF.js == JAX): {summary['fixed']}/{summary['fixable']} = {summary['fix_rate']:.1%}")
        print(f"clear errors:                   {summary['clear_errors']}/{summary['errors']} = "
              f"{summary['clear_error_rate']:.1%}")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
