"""Every model family, imported explicitly so that registration is visible in one place.

Families are sub-packages: recurrent/ (cells, norms, the recurrent LMs, seq2seq and sequence models),
conv/ (GCNN, ConvS2S), memory/ (MemN2N), attention/ (Transformer); state-space and implicit families
join the same way.
The contracts every model keeps are in base.py, the shared loss in losses.py.
"""

from seqtool.models.attention import block_recurrent, transformer  # noqa: F401
from seqtool.models.conv import convs2s, gcnn  # noqa: F401
from seqtool.models.memory import memn2n  # noqa: F401

# arma, orthogonal and state_reg register cells; sequence registers rnn_sequence
from seqtool.models.recurrent import arma, gnmt, orthogonal, rnn, sequence, state_reg  # noqa: F401
from seqtool.registry import MODELS

__all__ = ["MODELS"]
