"""seqtool: train, evaluate and decode sequence models from YAML recipes.

`seqtool.load(run_or_checkpoint)` is the Python API (seqtool/api.py)."""

import importlib

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazily, by name: the layers below import this package for __version__, and a static import of
    # the API (the top of the layers, with torch) would reach up from every one of them.
    if name == "load":
        return importlib.import_module("seqtool.api").load
    raise AttributeError(f"module 'seqtool' has no attribute {name!r}")
