"""Word alignments from attention, in Pharaoh format ("i-j": source word i, target word j, from 0).

Attention is over pieces; a word's pieces are merged (Tokenizer.word_ids: `▁` begins a word) by
summing the attention each target word's pieces paid to each source word's pieces, and every target
word is linked to the source word that received the most (one link at most per target word: a hard
alignment read off the attention matrix, Bahdanau et al. 2015, sec. 5.2.1; fairseq's --print-alignment
takes the argmax per target piece). A target word that paid more attention to the source EOS than to
any source word is left unaligned: attentional models park there what they generate from no source
word (a number's "thousand" in the quickstart). The EOS step on the target side is left out.
"""

from __future__ import annotations

import numpy as np


def word_alignment(attention: np.ndarray, src_words: list[int], tgt_words: list[int]) -> list[tuple[int, int]]:
    """(source word, target word) pairs, in target order, for (target pieces, source pieces + the source
    EOS) attention and each piece's word number on either side (EOS excluded)."""
    if not src_words or not tgt_words:
        return []
    eos = src_words[-1] + 1
    words = np.zeros((tgt_words[-1] + 1, eos + 1))
    np.add.at(words, (np.asarray(tgt_words)[:, None], np.asarray([*src_words, eos])[None, :]), attention)
    return [(int(i), j) for j, i in enumerate(words.argmax(1)) if i != eos]


def pharaoh(pairs: list[tuple[int, int]]) -> str:
    return " ".join(f"{i}-{j}" for i, j in pairs)
