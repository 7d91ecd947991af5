"""`translate` streams: an endless input yields translations after reading one chunk, so memory stays
bounded however long the input is."""

import itertools

import torch

from seqtool.data.tokenizer import SPECIALS, WordTokenizer
from seqtool.data.vocab import Vocabs
from seqtool.decoding import translate
from seqtool.models.base import VocabSizes
from seqtool.models.recurrent.gnmt import GNMT, GNMTConfig
from seqtool.recipe.schema import DecodeSpec


def test_translations_come_out_before_the_input_ends(monkeypatch):
    monkeypatch.setattr(translate, "CHUNK", 64)
    words = WordTokenizer([*SPECIALS, "a", "b", "c"])
    model = GNMT(GNMTConfig(embed_dim=8, hidden_dim=8, encoder_layers=2, decoder_layers=2), VocabSizes(7, 7)).eval()
    consumed = 0

    def endless():
        nonlocal consumed
        for i in itertools.count():
            consumed += 1
            yield ["a b", "c", "b c a"][i % 3]

    out = translate.translate_lines(model, Vocabs(words, words, True), endless(),
                                    DecodeSpec(beam=2, max_len_a=0, max_len_b=3, batch_tokens=200, max_src_len=10),
                                    device=torch.device("cpu"))
    first = list(itertools.islice(out, 100))
    assert len(first) == 100 and all(isinstance(t.text, str) for t in first)
    assert consumed <= 2 * 64 + 1  # two chunks read for 100 outputs, not the endless rest
