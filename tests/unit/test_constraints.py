"""Lexically constrained beam search (dynamic beam allocation) against probability tables: progress
tracking, bank sizes, an exhaustive search over the outputs that contain every constraint, and the
plain search where a sentence has no constraints."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from seqtool.decoding.constraints import Constraints, _bank_sizes
from seqtool.decoding.penalties import gnmt_score
from seqtool.decoding.search import search
from seqtool.errors import SeqtoolError
from seqtool.recipe.schema import DecodeSpec
from seqtool.specials import EOS
from tests.unit.test_search_oracle import TRAP, UNIFORM, WORDS, TableModel, _src


def _contains(body: tuple, phrase: list[int]) -> bool:
    return any(list(body[i : i + len(phrase)]) == phrase for i in range(len(body) - len(phrase) + 1))


def _walk(phrases: list[list[int]], words: list[int]) -> list[tuple[int, list[bool]]]:
    """(progress, allowed slots) after each word."""
    state, seen = Constraints.build([phrases]), []
    for word in words:
        state = state.advance(torch.tensor([word]))
        seen.append((int(state.met[0]), state.allowed()[0].tolist()))
    return seen


def test_phrases_are_matched_as_substrings_even_when_they_overlap():
    # "4 5" and "5 6" share the 5 of "4 5 6"; slots: 4 5 | 5 6
    assert _walk([[4, 5], [5, 6]], [4, 5, 6]) == [
        (1, [True, True, True, False]),  # "4" begins "4 5": its 5 (or a new 4, or "5 6"'s 5) advances
        (3, [False, False, True, True]),  # "4 5" met; the same 5 began "5 6"
        (4, [False, False, False, False]),
    ]
    # a prefix that repeats: "4 4 5" is found in "4 4 4 5"
    assert [p for p, _ in _walk([[4, 4, 5]], [4, 4, 4, 5])] == [1, 2, 2, 3]
    # a broken phrase keeps no progress; a word may begin it again
    assert [p for p, _ in _walk([[4, 5], [6]], [4, 6, 4, 5])] == [1, 1, 2, 3]


def test_a_phrase_asked_for_twice_must_occur_twice():
    state = Constraints.build([[[5], [5, 6], [5]]])
    assert state.size.tolist() == [4]
    state = state.advance(torch.tensor([5]))
    assert state.unmet().tolist() == [2]  # one "5" of two, and "5 6" begun
    state = state.advance(torch.tensor([6])).advance(torch.tensor([5]))
    assert state.unmet().tolist() == [0]


def test_bank_sizes_split_the_beam_and_pass_empty_slots_down():
    counts = torch.tensor([[9, 9, 9], [9, 0, 9], [9, 9, 0], [1, 9, 9]])
    sizes = _bank_sizes(counts, torch.tensor([2, 2, 2, 2]), 5)
    assert sizes.tolist() == [[1, 1, 3], [2, 0, 3], [1, 4, 0], [1, 1, 3]]
    # a bank-0 shortfall wraps to the top bank; a sentence with fewer constraints has fewer banks
    assert _bank_sizes(torch.tensor([[0, 9, 9], [9, 9, 0]]), torch.tensor([2, 1]), 5).tolist() == [[0, 1, 4],
                                                                                                    [2, 3, 0]]


def _best_with(model: TableModel, sentence: int, phrases: list[list[int]], max_len: int, settings: DecodeSpec):
    """The best output (of at most max_len tokens, EOS included) that contains every phrase."""
    best = None
    for n in range(max_len):
        for body in itertools.product(WORDS, repeat=n):
            if not all(_contains(body, p) for p in phrases):
                continue
            probs = [model.probs(sentence, body[:t]).get(tok, 0.0) for t, tok in enumerate((*body, EOS))]
            if 0.0 in probs:
                continue
            score = float(gnmt_score(torch.tensor([sum(map(math.log, probs))]), torch.tensor([n + 1]), None, None,
                                     alpha=settings.alpha, beta=0.0, kind=settings.length_penalty))
            if best is None or score > best[1] + 1e-9:
                best = (list(body), score)
    return best


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_finds_the_best_output_that_holds_every_constraint(alpha):
    model = TableModel([TRAP, {}, {(): {6: 0.5, 4: 0.3, EOS: 0.2}}], UNIFORM)
    phrases = [[[6]], [[4, 5], [6]], [[5, 5]]]
    settings = DecodeSpec(beam=40, alpha=alpha, max_len_a=0.0, max_len_b=2)
    src, mask = _src([0, 1, 2])
    results = search(model, src, mask, settings, constraints=phrases)
    for sentence, wanted in enumerate(phrases):
        limit = 2 + sum(len(p) for p in wanted)
        body, score = _best_with(model, sentence, wanted, limit, settings)
        assert results[sentence][0].tokens == body, sentence
        assert results[sentence][0].score == pytest.approx(score, abs=1e-5)


@pytest.mark.parametrize("beam", [1, 2, 5])
def test_every_constraint_appears_whatever_the_beam(beam):
    model = TableModel([TRAP, {}, {}], UNIFORM)
    phrases = [[[6], [6, 4]], [[5, 6, 4]], [[4], [4], [5, 5]]]
    src, mask = _src([0, 1, 2])
    for sentence, hyps in enumerate(search(model, src, mask, DecodeSpec(beam=beam, max_len_a=0.0, max_len_b=3),
                                           constraints=phrases)):
        body = tuple(hyps[0].tokens)
        assert all(_contains(body, p) for p in phrases[sentence]), (sentence, body)
        assert body.count(4) >= (2 if sentence == 2 else 0)


def test_a_sentence_without_constraints_decodes_as_plain_search_beside_constrained_ones():
    model = TableModel([TRAP, {}, TRAP], UNIFORM)
    settings = DecodeSpec(beam=3, alpha=0.6, max_len_a=0.0, max_len_b=4)
    src, mask = _src([0, 1, 2])
    plain = search(model, src, mask, settings)
    mixed = search(model, src, mask, settings, constraints=[[], [[6, 6]], []])
    for s in (0, 2):
        assert [(h.tokens, h.score) for h in mixed[s]] == [(h.tokens, h.score) for h in plain[s]]
    assert _contains(tuple(mixed[1][0].tokens), [6, 6])


def test_a_constrained_sentence_decodes_alone_as_in_a_batch():
    model = TableModel([TRAP, {}, TRAP], UNIFORM)
    settings = DecodeSpec(beam=4, alpha=0.6, max_len_a=0.0, max_len_b=3)
    phrases = [[[5, 6]], [[4], [6]], [[6]]]
    src, mask = _src([0, 1, 2])
    together = search(model, src, mask, settings, constraints=phrases)
    for s in range(3):
        alone = search(model, src[s : s + 1], mask[s : s + 1], settings, constraints=[phrases[s]])
        assert alone[0][0].tokens == together[s][0].tokens
        assert alone[0][0].score == pytest.approx(together[s][0].score, abs=1e-5)


def test_sampling_refuses_constraints():
    src, mask = _src([0])
    with pytest.raises(SeqtoolError, match="need decode.strategy beam"):
        search(TableModel([TRAP], UNIFORM), src, mask, DecodeSpec(strategy="sample"), constraints=[[[4]]])
