"""The diagnostics corpus: broken inputs built from small Flax models, their expected outcomes, and a runner.

``python -m tests.corpus.report`` runs it and prints the fix and clear-error rates;
``tests/test_diagnostics_corpus.py`` runs each case as a test.
"""
