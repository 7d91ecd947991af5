"""The command floor: one module per CLI command, the run loader and the task opener.

Only `seqtool.cli` imports from here; no library package does (import-linter checks it, see
pyproject.toml). `recipes` is the composition root: it registers every model and task before a
recipe is validated against the registries.
"""
