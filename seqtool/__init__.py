"""seqtool: train, evaluate and decode sequence models from YAML recipes."""

__version__ = "0.1.0"
