"""GNMT penalties against hand-computed values."""

import math

import pytest
import torch

from seqtool.decoding.penalties import coverage_penalty, gnmt_score, length_penalty


def test_length_penalty_values():
    lengths = torch.tensor([1, 4, 10])
    assert length_penalty(lengths, 0.0).tolist() == [1.0, 1.0, 1.0]
    assert length_penalty(lengths, 1.0).tolist() == pytest.approx([1.0, 1.5, 2.5])
    assert length_penalty(lengths, 0.6).tolist() == pytest.approx([1.0, 1.5**0.6, 2.5**0.6])


def test_fairseq_and_no_length_penalty_values():
    lengths = torch.tensor([1, 4, 10])
    assert length_penalty(lengths, 1.0, "fairseq").tolist() == [1.0, 4.0, 10.0]
    assert length_penalty(lengths, 0.5, "fairseq").tolist() == pytest.approx([1.0, 2.0, math.sqrt(10)])
    assert length_penalty(lengths, 0.0, "fairseq").tolist() == [1.0, 1.0, 1.0]
    assert length_penalty(lengths, 2.0, "none").tolist() == [1.0, 1.0, 1.0]


def test_score_divides_by_the_chosen_length_penalty():
    logp, lengths = torch.tensor([-6.0]), torch.tensor([4])
    assert gnmt_score(logp, lengths, None, None, alpha=1.0, beta=0.0, kind="fairseq").item() == pytest.approx(-1.5)
    assert gnmt_score(logp, lengths, None, None, alpha=1.0, beta=0.0, kind="gnmt").item() == pytest.approx(-4.0)
    assert gnmt_score(logp, lengths, None, None, alpha=1.0, beta=0.0, kind="none").item() == -6.0


def test_coverage_penalty_by_hand_with_padding():
    # source words: a (attention 0.5 + 0.3 = 0.8), b (0.5 + 0.9 = 1.4 -> capped at 1), pad (ignored)
    attn_sum = torch.tensor([[0.8, 1.4, 0.0]])
    mask = torch.tensor([[True, True, False]])
    assert coverage_penalty(attn_sum, mask, 0.2).item() == pytest.approx(0.2 * math.log(0.8))
    assert coverage_penalty(attn_sum, mask, 0.0).item() == 0.0


def test_uncovered_word_gives_a_large_finite_penalty():
    cp = coverage_penalty(torch.tensor([[0.0, 1.0]]), torch.tensor([[True, True]]), 1.0)
    assert torch.isfinite(cp).all() and cp.item() < -20


def test_gnmt_score_combines_both():
    score = gnmt_score(torch.tensor([-3.0]), torch.tensor([4]), torch.tensor([[0.5, 1.0]]),
                       torch.tensor([[True, True]]), alpha=1.0, beta=0.4)
    assert score.item() == pytest.approx(-3.0 / 1.5 + 0.4 * math.log(0.5))
