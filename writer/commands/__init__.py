"""The CLI's commands, one module each: its parser (flags from :mod:`writer.flags`) and what it runs.

:mod:`writer.cli` imports a command's module only when that command runs, so ``--help`` and
``--version`` load none of them, and a conversion never loads verify or the SavedModel export.
"""
