"""Every model family, imported explicitly so that registration is visible in one place.

Families are sub-packages: recurrent/ (cells, norms, the recurrent LMs, seq2seq and sequence models),
conv/ (GCNN, ConvS2S, CDIL-CNN), memory/ (MemN2N), attention/ (Transformer), implicit/ (the deep
equilibrium LM), state_space/ (S5).
The contracts every model keeps are in base.py, the shared loss in losses.py.
"""

from seqtool.models.attention import block_recurrent, transformer  # noqa: F401
from seqtool.models.conv import cdil, convs2s, gcnn  # noqa: F401
from seqtool.models.implicit import deq  # noqa: F401
from seqtool.models.memory import memn2n  # noqa: F401

# arma, orthogonal and state_reg register cells; sequence registers rnn_sequence, classifier rnn_classifier,
# rns rns_rnn
from seqtool.models.recurrent import arma, classifier, gnmt, orthogonal, rnn, rns, sequence, state_reg  # noqa: F401
from seqtool.models.state_space import s5  # noqa: F401
from seqtool.registry import MODELS

__all__ = ["MODELS"]
