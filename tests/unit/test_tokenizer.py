"""Tokenizers on real text: shared special ids, lossless round trips, save/load."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqtool.data.textio import iter_lines
from seqtool.data.tokenizer import (
    BOS,
    EOS,
    PAD,
    UNK,
    WordTokenizer,
    load_tokenizer,
    normalize,
    train_tokenizer,
)
from seqtool.errors import SeqtoolError
from seqtool.recipe.schema import TokenizerSpec
from tests.conftest import head, shared


@pytest.fixture(scope="module")
def german(tmp_path_factory) -> list[str]:
    path = head(shared("multi30k", "train.de"), tmp_path_factory.mktemp("tok") / "train.de", 3000)
    return list(iter_lines(path))


@pytest.mark.parametrize("kind,size", [("word", None), ("wordpiece", 1200), ("sentencepiece", 1200)])
def test_round_trip_and_specials(german, tmp_path, kind, size):
    tok = train_tokenizer(TokenizerSpec(kind=kind, vocab_size=size), lambda: iter(german))
    assert [tok.piece(i) for i in (PAD, BOS, EOS, UNK)] == ["<pad>", "<s>", "</s>", "<unk>"]
    ids = tok.encode(german[:500])
    assert all(i > UNK for seq in ids for i in seq)
    assert [tok.decode(seq) for seq in ids] == [normalize(x, False) for x in german[:500]]
    assert tok.decode(ids[0] + [EOS, 7, 8]) == tok.decode(ids[0])  # stops at EOS
    # pieces merge into the words of the decoded text (alignments count words so)
    assert all(tok.word_ids(seq)[-1] + 1 == len(tok.decode(seq).split()) for seq in ids if seq)
    tok.save(tmp_path / kind)
    again = load_tokenizer(tmp_path / kind)
    assert again.encode(german[:50]) == ids[:50]
    if size:
        assert len(tok) == size


def test_wordpieces_mark_word_starts_like_gnmt(german):
    tok = train_tokenizer(TokenizerSpec(kind="wordpiece", vocab_size=800), lambda: iter(german))
    pieces = [tok.piece(i) for i in tok.encode(["Ein Mann schläft."])[0]]
    assert pieces[0].startswith("▁") and "".join(pieces).replace("▁", " ").strip() == "Ein Mann schläft."
    assert pieces[-1] == "."  # punctuation is a piece of its own, not glued to the word
    assert tok.decode(tok.encode(["(Ein Hund) läuft, schnell!"])[0]) == "(Ein Hund) läuft, schnell!"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["der", "Hund", "läuft", "über", "die", "Wiese", ".", ","]), max_size=20))
def test_word_tokenizer_round_trips_known_words(words):
    tok = WordTokenizer.train(["der Hund läuft über die Wiese . ,"], vocab_size=None, min_count=1, lowercase=False)
    line = " ".join(words)
    assert tok.decode(tok.encode([line])[0]) == line


def test_unknown_words_and_literal_unk():
    tok = WordTokenizer.train(["a b c", "a b"], vocab_size=None, min_count=1, lowercase=False)
    assert tok.encode(["a zzz <unk>"])[0] == [tok.index["a"], UNK, UNK]


def test_vocabulary_larger_than_the_data_is_a_clear_error(german):
    with pytest.raises(SeqtoolError, match="larger than the training data allows"):
        WordTokenizer.train(["a b c"], vocab_size=100, min_count=1, lowercase=False)
    with pytest.raises(SeqtoolError, match="vocab_size 60000 is larger than the training data allows"):
        train_tokenizer(TokenizerSpec(kind="sentencepiece", vocab_size=60000), lambda: iter(german[:200]))


def test_broken_tokenizer_dir_is_a_clear_error(tmp_path: Path):
    with pytest.raises(SeqtoolError, match="not a seqtool tokenizer"):
        load_tokenizer(tmp_path)
