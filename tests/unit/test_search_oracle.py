"""Beam search against hand-written probability tables and an exhaustive search."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
import torch

from seqtool.decoding.penalties import gnmt_score
from seqtool.decoding.search import beam_search, search
from seqtool.models.base import Rows, Seq2SeqModel, StepOut
from seqtool.recipe.schema import DecodeSpec
from seqtool.specials import BOS, EOS

V = 7  # pad, bos, eos, unk, and the real tokens 4, 5, 6
WORDS = (4, 5, 6)


@dataclass
class Enc(Rows):
    sentence: torch.Tensor  # (N,) which table each row reads


@dataclass
class Prefix(Rows):
    tokens: torch.Tensor  # (N, t) generated so far


class TableModel(Seq2SeqModel):
    """p(next | prefix) from per-sentence tables {prefix tuple: {token: prob}}; unlisted prefixes use
    `default`. Attention is a fixed distribution per prefix length so coverage penalties are testable."""

    def __init__(self, tables: list[dict], default: dict, attn: list[list[float]] | None = None):
        super().__init__()
        self.tables, self.default, self.attn = tables, default, attn

    def encode(self, src, src_mask):
        return Enc(src[:, 0] - 4)

    def start(self, enc):
        return Prefix(torch.zeros(enc.sentence.numel(), 0, dtype=torch.long))

    def probs(self, sentence: int, prefix: tuple) -> dict:
        return self.tables[sentence].get(prefix, self.default)

    def step(self, prev, state, enc):
        first = bool((prev == BOS).all())
        tokens = state.tokens if first else torch.cat([state.tokens, prev[:, None]], 1)
        lp = torch.full((prev.numel(), V), -1e9)
        for row, (s, prefix) in enumerate(zip(enc.sentence.tolist(), tokens.tolist())):
            for tok, p in self.probs(s, tuple(prefix)).items():
                lp[row, tok] = math.log(p)
        attn = None
        if self.attn is not None:
            attn = torch.tensor(self.attn[min(tokens.size(1), len(self.attn) - 1)]).expand(prev.numel(), -1)
        return StepOut(lp, attn, Prefix(tokens))


def _src(sentences: list[int], length: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.tensor([[4 + s] * length + [EOS] for s in sentences])
    return src, torch.ones_like(src, dtype=torch.bool)


def repeats(body: tuple, n: int) -> bool:
    """Whether some n-gram occurs twice in body."""
    grams = [body[i : i + n] for i in range(len(body) - n + 1)]
    return len(set(grams)) < len(grams)


def exhaustive(model: TableModel, sentence: int, max_len: int, settings: DecodeSpec, src_mask=None):
    """Score every output of up to max_len tokens (EOS included) exactly as the search scores them
    (without those that repeat an n-gram under decode.no_repeat_ngram)."""
    best = None
    for n in range(max_len):
        for body in itertools.product(WORDS, repeat=n):
            if settings.no_repeat_ngram and repeats(body, settings.no_repeat_ngram):
                continue
            logp, ok, attn = 0.0, True, torch.zeros(3)
            for t, tok in enumerate((*body, EOS)):
                p = model.probs(sentence, tuple(body[:t])).get(tok, 0.0)
                if p == 0.0:
                    ok = False
                    break
                logp += math.log(p)
                if model.attn is not None:
                    attn += torch.tensor(model.attn[min(t, len(model.attn) - 1)])
            if not ok:
                continue
            score = float(gnmt_score(torch.tensor([logp]), torch.tensor([n + 1]), attn[None] if model.attn else None,
                                     src_mask, alpha=settings.alpha, beta=settings.beta,
                                     kind=settings.length_penalty))
            if best is None or score > best[1] + 1e-9:
                best = (list(body), score)
    return best


# root: 4 is likeliest but leads nowhere good; 5 then EOS is the best whole sequence.
TRAP = {(): {4: 0.5, 5: 0.4, EOS: 0.1}, (4,): {4: 0.36, 5: 0.34, EOS: 0.3}, (5,): {EOS: 0.9, 6: 0.1},
        (4, 4): {EOS: 0.6, 6: 0.4}, (4, 5): {EOS: 0.5, 6: 0.5}, (5, 6): {EOS: 1.0}}
UNIFORM = {4: 0.3, 5: 0.3, 6: 0.2, EOS: 0.2}


def test_greedy_falls_into_the_trap_and_beam_two_escapes_it():
    model = TableModel([TRAP], UNIFORM)
    src, mask = _src([0])
    greedy = search(model, src, mask, DecodeSpec(beam=1, max_len_a=0, max_len_b=4))[0][0]
    beam = search(model, src, mask, DecodeSpec(beam=2, max_len_a=0, max_len_b=4))[0][0]
    assert greedy.tokens == [4, 4]  # 0.5 * 0.36 * 0.6 = 0.108
    assert beam.tokens == [5]  # 0.4 * 0.9 = 0.36
    assert beam.log_prob == pytest.approx(math.log(0.36))
    assert beam.score == pytest.approx(math.log(0.36))


def test_length_penalty_changes_the_winner_by_hand():
    # Outputs of at most 3 tokens (EOS included) and their probabilities under TRAP:
    #   EOS .1 | 4 EOS .15 | 4 4 EOS .108 | 4 5 EOS .085 | 5 EOS .36 | 5 6 EOS .04
    # alpha=0: "5" wins. alpha=10: lp(2) = (7/6)^10 = 4.67, lp(3) = (8/6)^10 = 17.76, so
    #   5 EOS: log .36 / 4.67 = -0.219 and 4 4 EOS: log .108 / 17.76 = -0.125 (the best).
    model = TableModel([TRAP], UNIFORM)
    src, mask = _src([0])
    plain = search(model, src, mask, DecodeSpec(beam=4, max_len_a=0, max_len_b=3))[0][0]
    long = search(model, src, mask, DecodeSpec(beam=4, alpha=10.0, max_len_a=0, max_len_b=3))[0][0]
    assert plain.tokens == [5]
    assert long.tokens == [4, 4]
    assert long.score == pytest.approx(math.log(0.108) / (8 / 6) ** 10)


def test_fairseq_length_penalty_prefers_longer_outputs_than_gnmt_at_the_same_alpha():
    # Under TRAP at alpha 3: fairseq lp = |Y|^3 gives 5 EOS: log .36 / 8 = -0.128 and
    # 4 4 EOS: log .108 / 27 = -0.082 (the best; 4 5 EOS: log .085 / 27 = -0.091), while GNMT's
    # lp(2) = (7/6)^3, lp(3) = (8/6)^3 keeps 5 EOS ahead: -0.643 against -0.939.
    model = TableModel([TRAP], UNIFORM)
    src, mask = _src([0])
    fairseq = search(model, src, mask, DecodeSpec(beam=4, length_penalty="fairseq", alpha=3.0, max_len_a=0,
                                                      max_len_b=3))[0][0]
    gnmt = search(model, src, mask, DecodeSpec(beam=4, alpha=3.0, max_len_a=0, max_len_b=3))[0][0]
    none = search(model, src, mask, DecodeSpec(beam=4, length_penalty="none", alpha=3.0, max_len_a=0,
                                                   max_len_b=3))[0][0]
    assert fairseq.tokens == [4, 4]
    assert fairseq.score == pytest.approx(math.log(0.108) / 27)
    assert gnmt.tokens == [5]
    assert gnmt.score == pytest.approx(math.log(0.36) / (7 / 6) ** 3)
    assert none.tokens == [5] and none.score == pytest.approx(math.log(0.36))


@pytest.mark.parametrize("alpha,beta,kind", [(0.0, 0.0, "gnmt"), (0.6, 0.0, "gnmt"), (1.0, 0.0, "gnmt"),
                                             (0.0, 0.4, "gnmt"), (0.6, 0.2, "gnmt"), (1.0, 0.0, "fairseq"),
                                             (0.6, 0.2, "fairseq"), (2.0, 0.0, "none")])
def test_wide_beam_equals_exhaustive_search(alpha, beta, kind):
    torch.manual_seed(0)
    tables = []
    for _ in range(3):  # random tables over every prefix up to length 3
        table = {}
        for n in range(4):
            for prefix in itertools.product(WORDS, repeat=n):
                p = torch.rand(4) ** 2 + 0.01
                table[prefix] = dict(zip((4, 5, 6, EOS), (p / p.sum()).tolist()))
        tables.append(table)
    attn = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]]
    model = TableModel(tables, UNIFORM, attn if beta else None)
    settings = DecodeSpec(beam=40, length_penalty=kind, alpha=alpha, beta=beta, max_len_a=0, max_len_b=4)
    src, mask = _src([0, 1, 2])
    results = beam_search(model, src, mask, settings)
    for s in range(3):
        tokens, score = exhaustive(model, s, 4, settings, mask[:1])
        assert results[s][0].tokens == tokens
        assert results[s][0].score == pytest.approx(score, abs=1e-5)


@pytest.mark.parametrize("n,alpha", [(1, 0.0), (2, 0.0), (2, 2.0), (3, 1.0)])
def test_no_repeat_ngram_equals_exhaustive_search_over_outputs_without_repeats(n, alpha):
    # Outputs of up to 5 tokens with EOS: long enough that bigrams and trigrams can repeat.
    model = TableModel(_random_tables(3, 5, seed=0), UNIFORM)
    settings = DecodeSpec(beam=81, length_penalty="fairseq", alpha=alpha, max_len_a=0, max_len_b=5,
                          no_repeat_ngram=n)
    src, mask = _src([0, 1, 2])
    results = beam_search(model, src, mask, settings)
    for s in range(3):
        assert not repeats(tuple(results[s][0].tokens), n)
        tokens, score = exhaustive(model, s, 5, settings)
        assert results[s][0].tokens == tokens
        assert results[s][0].score == pytest.approx(score, abs=1e-5)


def test_no_repeat_ngram_holds_for_greedy_and_sampling():
    always_go_on = {4: 0.6, 5: 0.3, EOS: 0.1}
    model = TableModel([{}], always_go_on)
    src, mask = _src([0], length=4)
    plain = search(model, src, mask, DecodeSpec(beam=1, max_len_a=0, max_len_b=7))[0][0]
    assert plain.tokens == [4] * 6  # ended by the length limit
    assert search(model, src, mask, DecodeSpec(beam=1, max_len_a=0, max_len_b=7, no_repeat_ngram=2))[0][0].tokens \
        == [4, 4, 5, 4]  # after 4 4 5 4, both 4 4 and 4 5 are spent: only EOS is left
    settings = DecodeSpec(strategy="sample", n_best=50, max_len_a=0, max_len_b=7, no_repeat_ngram=2)
    for hyp in search(model, src, mask, settings, torch.Generator().manual_seed(0))[0]:
        assert not repeats(tuple(hyp.tokens), 2), hyp.tokens


def test_output_does_not_depend_on_batch_size_or_neighbours():
    torch.manual_seed(1)
    tables = [{(): dict(zip((4, 5, 6, EOS), (torch.rand(4) + 0.1).softmax(0).tolist()))} for _ in range(5)]
    model = TableModel(tables, UNIFORM)
    settings = DecodeSpec(beam=3, alpha=0.6, max_len_a=0, max_len_b=5, n_best=3)
    src, mask = _src(list(range(5)))
    together = beam_search(model, src, mask, settings)
    for s in range(5):
        alone = beam_search(model, src[s : s + 1], mask[s : s + 1], settings)[0]
        assert [(h.tokens, round(h.score, 6)) for h in alone] == [(h.tokens, round(h.score, 6)) for h in together[s]]


def test_n_best_is_sorted_distinct_and_sized():
    model = TableModel([TRAP], UNIFORM)
    src, mask = _src([0])
    hyps = search(model, src, mask, DecodeSpec(beam=4, n_best=3, max_len_a=0, max_len_b=3))[0]
    assert len(hyps) == 3
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    assert len({tuple(h.tokens) for h in hyps}) == 3


def test_length_limit_forces_eos():
    always_go_on = {4: 0.97, EOS: 0.03}
    model = TableModel([{}], always_go_on)
    src, mask = _src([0], length=2)  # |x| = 2, limit = 1.0 * 2 + 1 = 3 tokens with EOS
    hyps = search(model, src, mask, DecodeSpec(beam=3, n_best=3, max_len_a=1.0, max_len_b=1))[0]
    assert sorted(len(h.tokens) for h in hyps) == [0, 1, 2]  # the 2-token one ended by the limit
    assert hyps[-1].log_prob == pytest.approx(math.log(0.97 * 0.97 * 0.03))


def test_sampling_is_seeded_and_follows_the_table():
    model = TableModel([{(): {4: 0.8, 5: 0.2}}], {EOS: 1.0})
    src, mask = _src([0])
    # 400 draws: more than a recipe may ask for (decode.n_best <= 128), so past the schema's bound
    settings = DecodeSpec(strategy="sample", max_len_a=0, max_len_b=3).model_copy(update={"n_best": 400})
    draws = [h.tokens[0] for h in search(model, src, mask, settings, torch.Generator().manual_seed(0))[0]]
    again = [h.tokens[0] for h in search(model, src, mask, settings, torch.Generator().manual_seed(0))[0]]
    assert draws == again
    assert 0.7 < draws.count(4) / len(draws) < 0.9
    top1 = DecodeSpec(strategy="sample", n_best=50, top_k=1, max_len_a=0, max_len_b=3)
    assert {h.tokens[0] for h in search(model, src, mask, top1, torch.Generator().manual_seed(0))[0]} == {4}


def _random_tables(count: int, depth: int, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    tables = []
    for _ in range(count):
        table = {}
        for n in range(depth):
            for prefix in itertools.product(WORDS, repeat=n):
                p = torch.rand(4) ** 3 + 0.005
                table[prefix] = dict(zip((4, 5, 6, EOS), (p / p.sum()).tolist()))
        tables.append(table)
    return tables


class CountingModel(TableModel):
    def __init__(self, *args):
        super().__init__(*args)
        self.steps = 0

    def step(self, prev, state, enc):
        self.steps += 1
        return super().step(prev, state, enc)


@pytest.mark.parametrize("beam,alpha,beta", [(1, 0.0, 0.0), (3, 0.0, 0.0), (3, 0.6, 0.0), (2, 0.2, 0.2), (4, 1.0, 0.4)])
def test_large_prune_margin_changes_nothing(beam, alpha, beta):
    attn = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]]
    model = TableModel(_random_tables(4, 5, seed=beam), UNIFORM, attn if beta else None)
    src, mask = _src([0, 1, 2, 3])
    plain = DecodeSpec(beam=beam, alpha=alpha, beta=beta, n_best=beam, max_len_a=0, max_len_b=6)
    pruned = DecodeSpec(beam=beam, alpha=alpha, beta=beta, n_best=beam, max_len_a=0, max_len_b=6,
                            prune_margin=1e4)
    expect = beam_search(model, src, mask, plain)
    got = beam_search(model, src, mask, pruned)
    assert [[(h.tokens, h.score, h.log_prob) for h in hyps] for hyps in got] == \
           [[(h.tokens, h.score, h.log_prob) for h in hyps] for hyps in expect]


def test_rule_one_only_considers_tokens_near_the_best_local_score():
    # With margin 1.0, a token is considered only when log p >= log p_best - 1.0 (p >= 0.368 p_best).
    model = TableModel(_random_tables(2, 5, seed=7), UNIFORM)
    src, mask = _src([0, 1])
    kwargs = dict(beam=4, n_best=4, max_len_a=0, max_len_b=5)

    def violations(results, sentence):
        bad = 0
        for hyp in results[sentence]:
            for t, tok in enumerate((*hyp.tokens, EOS)[:4]):  # the 5th token is EOS forced by the limit
                probs = model.probs(sentence, tuple(hyp.tokens[:t]))
                bad += math.log(probs[tok]) < math.log(max(probs.values())) - 1.0
        return bad

    free = beam_search(model, src, mask, DecodeSpec(**kwargs))
    pruned = beam_search(model, src, mask, DecodeSpec(prune_margin=1.0, **kwargs))
    assert violations(free, 0) + violations(free, 1) > 0  # the rule has something to remove here
    assert violations(pruned, 0) + violations(pruned, 1) == 0


# root: EOS .5, 4 .45 (local gap 0.105), 5 .05 (gap 2.3); after 4: words .32/.3/.28, EOS .1 (gap 1.16);
# after 4 x, EOS .9.
RULE2 = {(): {EOS: 0.5, 4: 0.45, 5: 0.05}, (4,): {4: 0.32, 5: 0.3, 6: 0.28, EOS: 0.1}}
THEN_EOS = {EOS: 0.9, 4: 0.1}


def test_rule_two_drops_live_hypotheses_far_below_the_best_finished():
    # Step 0 finishes "" (log .5 = -0.69). After step 1 the best live "4 4" has log(.45 * .32) = -1.94, 1.24
    # below: margin 1.2 drops the live rows and the search ends after 2 steps with one hypothesis; margin 1.5
    # keeps them, and "4 4" EOS is the second best, as without pruning.
    src, mask = _src([0])
    kwargs = dict(beam=2, n_best=2, max_len_a=0, max_len_b=6)
    model = CountingModel([RULE2], THEN_EOS)
    tight = beam_search(model, src, mask, DecodeSpec(prune_margin=1.2, **kwargs))[0]
    assert [h.tokens for h in tight] == [[]] and model.steps == 2
    loose = beam_search(model, src, mask, DecodeSpec(prune_margin=1.5, **kwargs))[0]
    free = beam_search(model, src, mask, DecodeSpec(**kwargs))[0]
    assert [h.tokens for h in loose] == [h.tokens for h in free] == [[], [4, 4]]
    assert loose[1].log_prob == pytest.approx(math.log(0.45 * 0.32 * 0.9))


def test_rule_two_uses_the_normalized_score():
    # alpha = 1: after step 1, "4 4" normalizes to log(.144) / (7/6) = -1.66, only 0.97 below "" (-0.69 / 1):
    # margin 1.2 now keeps it, and it finishes with log(.1296) / (8/6).
    src, mask = _src([0])
    model = CountingModel([RULE2], THEN_EOS)
    hyps = beam_search(model, src, mask, DecodeSpec(beam=2, n_best=2, alpha=1.0, max_len_a=0, max_len_b=6,
                                                        prune_margin=1.2))[0]
    assert [h.tokens for h in hyps] == [[], [4, 4]]
    assert hyps[1].score == pytest.approx(math.log(0.45 * 0.32 * 0.9) / (8 / 6))


def test_early_stop_ends_once_beam_hypotheses_have_finished():
    # beam 2, fairseq lp |Y|^3. Step 2's best two candidates both end: 4 EOS (.42, log .42 / 8 = -0.108)
    # and 5 EOS (.28), so fairseq's rule stops there with "4"; the exact search keeps 4 6 open (its bound
    # log .18 / 4^3 = -0.027 beats -0.108) and finds 4 6 EOS (.18, log .18 / 27 = -0.064).
    table = {(): {4: 0.6, 5: 0.4}, (4,): {EOS: 0.7, 6: 0.3}, (5,): {EOS: 0.7, 6: 0.3}, (4, 6): {EOS: 1.0},
             (5, 6): {EOS: 1.0}}
    src, mask = _src([0])
    outputs, steps = {}, {}
    for early in (False, True):
        model = CountingModel([table], UNIFORM)
        spec = DecodeSpec(beam=2, length_penalty="fairseq", alpha=3.0, max_len_a=0, max_len_b=4, early_stop=early)
        outputs[early], steps[early] = beam_search(model, src, mask, spec)[0][0].tokens, model.steps
    assert outputs == {False: [4, 6], True: [4]}
    assert steps[True] < steps[False]
