"""Word alignments from piece-level attention: pieces merge into words, EOS takes what no word gets."""

import numpy as np

from seqtool.decoding.alignment import pharaoh, word_alignment


def test_pieces_merge_into_words_and_eos_leaves_a_word_unaligned():
    # source "▁Ein ▁Hund e </s>" (words 0, 1, 1, EOS), target "▁A ▁do g ▁ran" (words 0, 1, 1, 2)
    attention = np.array([[0.8, 0.1, 0.0, 0.1],
                          [0.1, 0.3, 0.3, 0.3],  # "▁do": 0.6 on Hund's two pieces, more than on any one
                          [0.2, 0.5, 0.0, 0.3],
                          [0.1, 0.1, 0.1, 0.7]])  # "▁ran" looks at EOS: no source word
    pairs = word_alignment(attention, [0, 1, 1], [0, 1, 1, 2])
    assert pairs == [(0, 0), (1, 1)]
    assert pharaoh(pairs) == "0-0 1-1"
    assert word_alignment(attention[:0], [0, 1, 1], []) == []
