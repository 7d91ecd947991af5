"""Every model family, imported explicitly so that registration is visible in one place."""

# arma, orthogonal and state_reg register cells; sequence registers rnn_sequence
from seqtool.models import arma, convs2s, gcnn, gnmt, memn2n, orthogonal, rnn, sequence, state_reg, transformer  # noqa: F401
from seqtool.registry import MODELS

__all__ = ["MODELS"]
