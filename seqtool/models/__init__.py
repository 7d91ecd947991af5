"""Every model family, imported explicitly so that registration is visible in one place."""

from seqtool.models import rnn  # noqa: F401
from seqtool.registry import MODELS

__all__ = ["MODELS"]
