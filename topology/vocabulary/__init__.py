"""The words both floors speak: tensor references, tree paths, variables, errors and notices.

This is the bottom of the house. ``writer`` (readers, fixes, the pipeline, the
CLI) and ``topology`` (layer graphs, tracing) both import it; it imports nothing
else from the project (``tests/test_architecture.py`` keeps it that way).
"""
