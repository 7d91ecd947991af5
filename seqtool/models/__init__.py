"""Every model family, imported explicitly so that registration is visible in one place."""

from seqtool.models import convs2s, gcnn, gnmt, memn2n, rnn  # noqa: F401
from seqtool.models import arma, orthogonal, sequence, state_reg  # noqa: F401  (cells; rnn_sequence)
from seqtool.registry import MODELS

__all__ = ["MODELS"]
