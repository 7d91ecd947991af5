"""Context-free language data (seqtool/data/cfl.py, task synthetic kind cfl): seeded, in the language, the
length-conditioned probabilities exact (summed over every string, sampled, and counted by hand), and each
string's least loss."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from seqtool.data.cfl import Dyck, PaddedReversal, Reversal
from seqtool.data.formal import is_balanced
from seqtool.tasks.sequence import SyntheticSpec, describe_io, generate

LANGUAGES = {
    "marked_reversal": (Reversal(2, marked=True), lambda w: len(w) % 2 == 1 and w[len(w) // 2] == 2
                        and 2 not in w[: len(w) // 2] and w == w[::-1]),
    "unmarked_reversal": (Reversal(2, marked=False), lambda w: len(w) % 2 == 0 and w == w[::-1]),
    "padded_reversal": (PaddedReversal(2, 3.0, 2.0), lambda w: any(
        w[:h] == w[len(w) - h:][::-1] and len(set(w[h: len(w) - h])) <= 1 for h in range(len(w) // 2 + 1))),
    "dyck": (Dyck(2, 1.0, 3.0), lambda w: len(w) > 0 and is_balanced(w, 2)),
}


def spec(language: str, **fields) -> SyntheticSpec:
    return SyntheticSpec(**{"kind": "cfl", "language": language, "symbols": 2, "train": 40, "valid": 10, "test": 10,
                            "train_lengths": [4, 9], "test_lengths": [10, 14], **fields})


@pytest.mark.parametrize("name", LANGUAGES)
def test_strings_are_seeded_and_in_the_language(name):
    language, member = LANGUAGES[name]
    s = spec(name, mean_nesting=3.0, mean_content=3.0, mean_padding=2.0)
    a, b, other = generate(s, "test"), generate(s, "test"), generate(spec(name, seed=2), "test")
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("inputs", "targets", "bound", "offsets"))
    assert not np.array_equal(a.inputs, other.inputs)
    end = describe_io(s)["input"]["size"] - 1
    for start, stop in zip(a.offsets[:-1], a.offsets[1:]):
        inputs, targets = a.inputs[start:stop].tolist(), a.targets[start:stop].tolist()
        assert inputs[0] == targets[-1] == end and inputs[1:] == targets[:-1]  # BOS w -> w EOS
        assert member(targets[:-1]) and 10 <= len(targets) - 1 <= 14


@pytest.mark.parametrize("name", LANGUAGES)
def test_length_conditioned_probabilities_sum_to_one_and_match_sampling(name):
    """p(w | n) over every string of length n sums to 1 (n <= 6), and 3000 samples of length 4 or 5 land
    on each string as often as p says (total variation below 0.05; sampling noise is about 0.02)."""
    language, member = LANGUAGES[name]
    for n in range(7):
        if language.has_length(n):
            words = [list(w) for w in itertools.product(range(language.alphabet), repeat=n) if member(list(w))]
            assert math.isclose(sum(math.exp(language.log_prob(w)) for w in words), 1.0, rel_tol=1e-9)
    n = 4 if language.has_length(4) else 5
    rng = np.random.default_rng(0)
    counts = Counter(tuple(language.sample(rng, n)) for _ in range(3000))
    words = [w for w in itertools.product(range(language.alphabet), repeat=n) if member(list(w))]
    assert set(counts) <= set(words)
    assert sum(abs(counts[w] / 3000 - math.exp(language.log_prob(list(w)))) for w in words) / 2 < 0.05


def test_least_loss_by_hand():
    """Marked reversal on lengths 3-7 (3, 5 or 7, each a third): a string of length 2k+1 costs
    k ln 2 + ln 3 nats at best. Dyck with one bracket kind, length 4: p(w | 4) of (()) is
    (1-s) v / ((1-s) v + s (1-v)) with s = 1/2 (one split on average) and v = 2/3 (depth 3)."""
    examples = generate(spec("marked_reversal", train_lengths=[3, 7]), "train")
    halves = (examples.lengths() - 2) // 2  # BOS w # w^R: 2k + 2 inputs
    assert np.allclose(examples.bound, halves * math.log(2) + math.log(3))
    dyck = Dyck(1, 1.0, 3.0)
    s, v = 0.5, 2 / 3
    assert math.isclose(math.exp(dyck.log_prob([0, 0, 1, 1])), (1 - s) * v / ((1 - s) * v + s * (1 - v)))
    assert math.isclose(math.exp(dyck.log_prob([0, 1, 0, 1])), s * (1 - v) / ((1 - s) * v + s * (1 - v)))


def test_marked_reversal_scores_the_symbols_after_the_mark():
    examples = generate(spec("marked_reversal"), "valid")
    for start, stop in zip(examples.offsets[:-1], examples.offsets[1:]):
        inputs, scored = examples.inputs[start:stop], examples.scored[start:stop]
        mark = int(np.flatnonzero(inputs == 2)[0])
        assert not scored[:mark].any() and scored[mark:].all()  # w^R and the end follow from the prefix
    assert not generate(spec("dyck"), "valid").scored.any()


def test_a_range_without_strings_is_refused():
    with pytest.raises(ValueError, match="marked_reversal has no string with a length in \\[4, 4\\]"):
        spec("marked_reversal", train_lengths=[4, 4])
