"""Greedy, beam and sampling search over the decoder contract (encode / start / step / reorder).

Beam search follows the usual batched algorithm (as in fairseq and Sockeye): every step scores
2K candidates per sentence; EOS candidates among the best K are finalised with the final score
(penalties.py: GNMT's or fairseq's length penalty, GNMT's coverage penalty); the best K others
continue. A sentence is done when no live hypothesis can still beat its n-best finished ones (an
upper bound that holds under length and coverage penalties) or at its length limit; done sentences
leave the batch. fairseq's rule, done once K hypotheses are finished, is `decode.early_stop`: when the
model is confident, K poor early-EOS hypotheses can fill the finished set before the best one ends, but
under a length penalty that favours length (fairseq's |Y|^1) the bound above holds every sentence open
to its length limit, so the rule saves steps. Beam 1 is greedy.
Each sentence's computation is independent of the others, so in fp32 output does not depend on batch
size; under bf16 autocast (decode.precision) the kernels' rounding can depend on the batch's shape,
so a near-tie may occasionally resolve differently.

GNMT's pruning (Wu et al. 2016, sec. 7), on with `prune_margin` (the paper's "beamsize", 3.0):
  1. a hypothesis only considers tokens whose local score log p(y | prefix) is within the margin of
     its best token's;
  2. once a sentence has a finished hypothesis, live hypotheses whose normalized score s(Y, X) (of
     the prefix so far) is more than the margin below the best finished score are dropped.
Both only remove candidates that are far behind, so a large margin gives the plain search's output
exactly; rule 2 also lets sentences finish early, which is where the speed comes from.

decode.no_repeat_ngram (fairseq's --no-repeat-ngram-size) bans, at each step and for every strategy,
any token that would complete an n-gram the row's output already holds; EOS is never banned.

Lexical constraints (constraints.py: dynamic beam allocation, Post and Vilar 2018) replace the
candidate and selection phases: every row's EOS is a candidate to finish (allowed once its constraints
are met), and the K rows that go on are allocated over banks of constraint progress.
With decode.alignment each row also keeps the attention of every step it took (copied with the row
as it moves, as fairseq does), so finished hypotheses carry their (steps, source) attention.

Everything per step is tensor work over all sentences at once (finished hypotheses included, kept
as (sentences, K) tensors); the host reads one boolean per step (whether a sentence is done, to
shrink the batch) and turns tensors into Python hypotheses once per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from seqtool.decoding.constraints import Constraints, allocate
from seqtool.decoding.penalties import gnmt_score, length_penalty
from seqtool.errors import SeqtoolError
from seqtool.models.base import Rows, Seq2SeqModel
from seqtool.recipe.schema import DecodeSpec
from seqtool.registry import STRATEGIES
from seqtool.specials import BOS, EOS, PAD
from seqtool.util.precision import autocast


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids without BOS and EOS
    score: float  # final score: log P / lp + cp
    log_prob: float
    attention: torch.Tensor | None = None  # (len(tokens) + 1, S): each step's attention over the source
    # tokens (EOS's step last, the source EOS last); decode.alignment only


Phrases = list[list[list[int]]]  # per sentence, the token ids of each phrase its output must contain


@dataclass
class Live(Rows):
    """Search bookkeeping for the sentences still being decoded; K rows per sentence for beams."""

    tokens: torch.Tensor  # (N, T + 1) BOS, the tokens so far, PAD after them (T: the longest limit)
    scores: torch.Tensor  # (N,) cumulative log-probabilities
    attn_sum: torch.Tensor | None  # (N, S) attention mass each source position received
    src_mask: torch.Tensor  # (N, S)
    max_len: torch.Tensor  # (N,) output length limit, EOS included
    attn_steps: torch.Tensor | None = None  # (N, T, S) attention of each step taken (decode.alignment)
    constraints: Constraints | None = None  # lexical constraints and each row's progress


def search(model: Seq2SeqModel, src: torch.Tensor, src_mask: torch.Tensor, settings: DecodeSpec,
           generator: torch.Generator | None = None, constraints: Phrases | None = None,
           first: int | None = None) -> list[list[Hypothesis]]:
    """Decode a batch with the strategy `settings.strategy` names; one list of hypotheses (best first)
    per source row. Every strategy takes (model, src, src_mask, settings, generator, constraints, first):
    constraints, when given, hold for each source row the phrases its output must contain; `first`, when
    given, is the token every output starts with (a target-language tag; it stays in the hypotheses)."""
    if constraints is not None and not any(constraints):
        constraints = None
    with torch.inference_mode(), autocast(settings.precision, src.device):
        return STRATEGIES.get(settings.strategy).builder(model, src, src_mask, settings, generator, constraints,
                                                         first)


def output_limits(src_mask: torch.Tensor, settings: DecodeSpec, extra: torch.Tensor | int = 0) -> torch.Tensor:
    """max output length a * |x| + b (+ extra: the constraint tokens) per sentence, |x| without the source EOS."""
    src_len = src_mask.sum(1) - 1
    limit = (settings.max_len_a * src_len.float()).floor().long() + settings.max_len_b + extra
    return limit.clamp(1, settings.max_output)


def _start(model, src, src_mask, settings, rows_per_sentence: int, constraints: Phrases | None = None):
    enc = model.encode(src, src_mask)
    B = src.size(0)
    rows = torch.arange(B, device=src.device).repeat_interleave(rows_per_sentence)
    enc = enc.reorder(rows) if rows_per_sentence > 1 else enc
    first = torch.zeros(B, rows_per_sentence, device=src.device)
    first[:, 1:] = float("-inf")  # K copies of one empty prefix: only one may expand at step 0
    attn = src.new_zeros(rows.numel(), src.size(1), dtype=torch.float32) if settings.beta else None
    phrases = Constraints.build(constraints, src.device) if constraints is not None else None
    limits = output_limits(src_mask, settings, 0 if phrases is None else phrases.size)
    tokens = src.new_full((rows.numel(), int(limits.max()) + 1), PAD)
    tokens[:, 0] = BOS
    steps = (src.new_zeros(rows.numel(), tokens.size(1) - 1, src.size(1), dtype=torch.float32)
             if settings.alignment else None)
    live = Live(tokens, first.view(-1), attn, src_mask[rows], limits[rows], steps,
                None if phrases is None else phrases.reorder(rows))
    return enc, model.start(enc), live, torch.arange(B, device=src.device)


def _constrain(x: torch.Tensor, step: int, live: Live, settings: DecodeSpec, shortest: int,
               first: int | None = None) -> torch.Tensor:
    """(2) In place on (N, V) log-probabilities (the step's own output, which search consumes): never
    PAD/BOS, nor a token that repeats an n-gram (decode.no_repeat_ngram); EOS only once a row's
    constraints are met; only EOS at a row's length limit (constraints met or not); only `first` at
    step 0 when it is given. `shortest` is the smallest limit among the rows, known on the host, so
    that rows far from their limits cost nothing."""
    if step == 0 and first is not None:
        forced = x[:, first].clone()
        x.fill_(float("-inf"))
        x[:, first] = forced
        return x
    x[:, PAD] = x[:, BOS] = float("-inf")
    if settings.no_repeat_ngram:
        _block_repeats(x, live.tokens[:, 1 : step + 1], settings.no_repeat_ngram)
    near_limit = step + 1 >= shortest
    eos = x[:, EOS].clone() if near_limit else None
    if live.constraints is not None:
        x[:, EOS].masked_fill_(live.constraints.unmet() > 0, float("-inf"))
    if near_limit:
        at_limit = (step + 1 >= live.max_len).unsqueeze(1)  # (N, 1)
        x.masked_fill_(at_limit, float("-inf"))
        x[:, EOS] = torch.where(at_limit[:, 0], eos, x[:, EOS])
    return x


def _block_repeats(x: torch.Tensor, prefix: torch.Tensor, n: int) -> None:
    """In place on (N, V): a token that would complete an n-gram the row's prefix (N, t) already holds
    gets -inf (fairseq's --no-repeat-ngram-size). The prefix's last n - 1 tokens are compared with the
    first n - 1 of each of its n-grams; the last token of every match is banned."""
    if prefix.size(1) < n:
        return
    grams = prefix.unfold(1, n, 1)  # (N, t - n + 1, n)
    match = (grams[:, :, :-1] == prefix[:, None, prefix.size(1) - n + 1 :]).all(2)
    x.scatter_(1, grams[:, :, -1].masked_fill(~match, PAD), float("-inf"))  # PAD is banned already


@STRATEGIES.register("beam")
def beam_search(model: Seq2SeqModel, src: torch.Tensor, src_mask: torch.Tensor, settings: DecodeSpec,
                generator: torch.Generator | None = None, constraints: Phrases | None = None,
                first: int | None = None) -> list[list[Hypothesis]]:
    """Phases per step: (1) model step, (2) constrain, (3) candidates, (4) finalize EOS candidates,
    (5) advance, (6) GNMT pruning of live rows, (7) done sentences leave the batch. No Python loop over
    hypotheses, and one host read per step (whether any sentence is done). Deterministic: no generator."""
    K = settings.beam
    enc, state, live, sentence = _start(model, src, src_mask, settings, K, constraints)
    finished = _Finished.empty(src.size(0), K, live.tokens.size(1) - 1, src.device, live.attn_steps)
    results = _Finished.empty(src.size(0), K, live.tokens.size(1) - 1, src.device, live.attn_steps)
    shortest = int(live.max_len.min())
    for step in range(live.tokens.size(1) - 1):
        out = model.step(live.tokens[:, step], state, enc)  # (1)
        _record_attention(live, out.attn, step)
        log_probs = _constrain(out.log_probs.float(), step, live, settings, shortest, first)  # (2)
        if live.constraints is None:
            cand = _candidates(live.scores, log_probs, K, settings.prune_margin)  # (3)
        else:
            cand = _allocated(live, log_probs, K, settings.prune_margin)
        finished = _finalize(finished, live, cand, step, settings)  # (4)
        live, state = _advance(live, out.state, cand, step, K)  # (5)
        if settings.prune_margin is not None:
            live.scores = _prune_live(live, finished, step, settings)  # (6)
        done = _done(finished, live, step, settings)  # (7)
        if not bool(done.any()):
            continue
        results.put(sentence[done], finished.reorder(done.nonzero().squeeze(1)))
        if bool(done.all()):
            break
        rows = (~done).repeat_interleave(K).nonzero().squeeze(1)
        live, state, enc = live.reorder(rows), state.reorder(rows), enc.reorder(rows)
        finished, sentence = finished.reorder((~done).nonzero().squeeze(1)), sentence[~done]
        shortest = int(live.max_len.min())
    return results.hypotheses(settings.n_best, src_mask.sum(1))


def _record_attention(live: Live, attn: torch.Tensor | None, step: int) -> None:
    """The attention of this step, summed for the coverage penalty and kept per step for alignments."""
    if (live.attn_sum is not None or live.attn_steps is not None) and attn is None:
        raise SeqtoolError("this model has no attention: decode.beta (coverage penalty) and decode.alignment "
                           "need one")
    if live.attn_sum is not None:
        live.attn_sum = live.attn_sum + attn.float()
    if live.attn_steps is not None:
        live.attn_steps[:, step] = attn.float()


@dataclass
class _Finished(Rows):
    """The K best finished hypotheses of each sentence, best first (score -inf: an empty slot); one
    that meets every constraint ranks above any that does not (those end only at the length limit)."""

    scores: torch.Tensor  # (n, K) final scores log P / lp + cp
    log_probs: torch.Tensor  # (n, K)
    lengths: torch.Tensor  # (n, K) tokens before EOS
    tokens: torch.Tensor  # (n, K, T) the tokens before EOS, PAD after them
    unmet: torch.Tensor  # (n, K) constraint tokens the hypothesis misses
    attention: torch.Tensor | None  # (n, K, T, S) attention of each step (decode.alignment)

    @classmethod
    def empty(cls, n: int, K: int, T: int, device: torch.device, steps: torch.Tensor | None) -> _Finished:
        scores = torch.full((n, K), float("-inf"), device=device)
        zeros = torch.zeros(n, K, dtype=torch.long, device=device)
        attention = None if steps is None else steps.new_zeros(n, K, *steps.shape[1:])
        return cls(scores, scores.clone(), zeros, torch.full((n, K, T), PAD, dtype=torch.long, device=device),
                   zeros.clone(), attention)

    def merge(self, other: _Finished) -> _Finished:
        """The K best of both by (constraints met, score), ties keeping self's first (stable sorts, as
        appending to a sorted list)."""
        K = self.scores.size(1)
        scores = torch.cat([self.scores, other.scores], 1)
        order = scores.sort(dim=1, descending=True, stable=True).indices
        unmet = torch.cat([self.unmet, other.unmet], 1).masked_fill(scores == float("-inf"), 1 << 30)  # empty last
        order = order.gather(1, unmet.gather(1, order).sort(dim=1, stable=True).indices)[:, :K]
        return _Finished(*(_pick(getattr(self, f.name), getattr(other, f.name), order) for f in fields(self)))

    def put(self, index: torch.Tensor, rows: _Finished) -> None:
        for f in fields(self):
            if getattr(self, f.name) is not None:
                getattr(self, f.name)[index] = getattr(rows, f.name)

    def hypotheses(self, n_best: int, src_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        """Plain Python results, read from the tensors once (attention cut to each hypothesis's steps
        and its source's tokens)."""
        out = []
        attention = self.attention[:, :n_best].cpu() if self.attention is not None else None
        for i, (scores, log_probs, lengths, tokens, width) in enumerate(zip(
                self.scores[:, :n_best].tolist(), self.log_probs[:, :n_best].tolist(),
                self.lengths[:, :n_best].tolist(), self.tokens[:, :n_best].tolist(), src_lengths.tolist())):
            out.append([Hypothesis(t[:n], s, lp, None if attention is None else attention[i, k, : n + 1, :width])
                        for k, (s, lp, n, t) in enumerate(zip(scores, log_probs, lengths, tokens))
                        if s > float("-inf")])
        return out


def _pick(a: torch.Tensor | None, b: torch.Tensor | None, order: torch.Tensor) -> torch.Tensor | None:
    """Slots `order` (n, K) of a and b (n, K, ...) side by side."""
    if a is None:
        return None
    index = order.view(*order.shape, *[1] * (a.dim() - 2)).expand(-1, -1, *a.shape[2:])
    return torch.cat([a, b], 1).gather(1, index)


@dataclass
class Candidates:
    scores: torch.Tensor  # (n, 2K) cumulative log-probabilities, best first
    parents: torch.Tensor  # (n, 2K) row each candidate extends
    tokens: torch.Tensor  # (n, 2K)
    progress: Constraints | None = None  # under constraints: the constraint progress of the K that go on


def _candidates(scores: torch.Tensor, log_probs: torch.Tensor, K: int, prune_margin: float | None) -> Candidates:
    """(3) The 2K best one-token extensions of each sentence's K rows: (N,) cumulative scores plus (N, V)
    next-token log-probabilities. A sentence's 2K best are among its rows' own 2K best tokens, so only
    those are added up and ranked (no pass over a (N, V) sum).

    GNMT pruning rule 1 (Wu et al. 2016, sec. 7): a row only considers tokens whose local score is
    within prune_margin of its best token (log p(y|prefix) >= max_y' log p(y'|prefix) - margin)."""
    width = min(2 * K, log_probs.size(1))
    local, token = log_probs.topk(width, dim=1)  # (N, 2K), best first
    if prune_margin is not None:
        local = local.masked_fill(local < local[:, :1] - prune_margin, float("-inf"))
    total = (scores.unsqueeze(1) + local).view(-1, K * width)  # (n, K * 2K)
    cand_scores, index = total.topk(min(2 * K, K * width), dim=1)
    base = torch.arange(total.size(0), device=total.device).unsqueeze(1) * K
    return Candidates(cand_scores, base + index // width, token.view(-1, K * width).gather(1, index))


def _allocated(live: Live, log_probs: torch.Tensor, K: int, prune_margin: float | None) -> Candidates:
    """(3) under constraints: every row's EOS first (K slots, -inf unless it finishes a hypothesis),
    then the K rows that go on, allocated by DBA (constraints.py) over the beam's 2K best non-EOS
    extensions and those that advance constraints."""
    n = log_probs.size(0) // K
    finish = live.scores + log_probs[:, EOS]
    going_on = log_probs.clone()
    going_on[:, EOS] = float("-inf")
    top = _candidates(live.scores, going_on, K, prune_margin)
    scores, parents, tokens, progress, ending = allocate(top.scores, top.parents, top.tokens, live.scores, going_on,
                                                         finish, live.constraints, K)
    rows = torch.arange(n * K, device=log_probs.device).view(n, K)
    return Candidates(torch.cat([finish.view(n, K).masked_fill(~ending, float("-inf")), scores], 1),
                      torch.cat([rows, parents], 1), torch.cat([torch.full_like(rows, EOS), tokens], 1), progress)


def _finalize(finished: _Finished, live: Live, cand: Candidates, step: int, settings: DecodeSpec) -> _Finished:
    """(4) EOS among a sentence's first K candidates (its best K; every row's EOS under constraints)
    ends a hypothesis, scored by GNMT's s(Y, X) and merged into the sentence's K best finished ones."""
    K = settings.beam
    n = cand.scores.size(0)
    eos = (cand.tokens[:, :K] == EOS) & (cand.scores[:, :K] > float("-inf"))  # (n, K)
    rows = cand.parents[:, :K].reshape(-1)
    log_prob = cand.scores[:, :K].reshape(-1)
    attn = live.attn_sum[rows] if live.attn_sum is not None else None
    lengths = torch.full_like(rows, step + 1)
    final = gnmt_score(log_prob, lengths, attn, live.src_mask[rows], alpha=settings.alpha, beta=settings.beta,
                       kind=settings.length_penalty)
    unmet = live.constraints.unmet()[rows] if live.constraints is not None else torch.zeros_like(rows)
    steps = live.attn_steps[rows].view(n, K, *live.attn_steps.shape[1:]) if live.attn_steps is not None else None
    new = _Finished(final.view(n, K).masked_fill(~eos, float("-inf")), log_prob.view(n, K),
                    (lengths - 1).view(n, K), live.tokens[rows, 1:].view(n, K, -1), unmet.view(n, K), steps)
    return finished.merge(new)


def _advance(live: Live, state: Rows, cand: Candidates, step: int, K: int) -> tuple[Live, Rows]:
    """(5) The best K non-EOS candidates become the new rows (at most K of 2K are EOS)."""
    width = cand.tokens.size(1)
    rank = torch.arange(width, device=cand.tokens.device) + (cand.tokens == EOS) * width
    pick = rank.topk(K, dim=1, largest=False).indices  # (n, K), in candidate order
    parents = cand.parents.gather(1, pick).view(-1)
    moved = live.reorder(parents)
    moved.tokens[:, step + 1] = cand.tokens.gather(1, pick).view(-1)
    moved.scores = cand.scores.gather(1, pick).view(-1)
    if cand.progress is not None:  # the K that go on are the last K candidates, in order
        moved.constraints = cand.progress
    return moved, state.reorder(parents)


def _prune_live(live: Live, finished: _Finished, step: int, settings: DecodeSpec) -> torch.Tensor:
    """(6) GNMT pruning rule 2: once a sentence has a finished hypothesis, live rows whose normalized
    score (s(Y, X) of the prefix so far) is more than prune_margin below its best are dropped
    (their score becomes -inf, so they are never extended nor keep the sentence open)."""
    lengths = torch.full_like(live.max_len, step + 1)
    normalized = gnmt_score(live.scores, lengths, live.attn_sum, live.src_mask, alpha=settings.alpha,
                            beta=settings.beta, kind=settings.length_penalty)
    best = finished.scores[:, :1].expand(-1, settings.beam).reshape(-1)
    return live.scores.masked_fill(normalized < best - settings.prune_margin, float("-inf"))


def _done(finished: _Finished, live: Live, step: int, settings: DecodeSpec) -> torch.Tensor:
    """(7) A sentence is done when no live row can still beat its n_best-th finished hypothesis, or
    at its length limit. A live row with log-probability s < 0 can at best reach s / lp(max_len):
    log-probabilities only fall, lp only grows up to max_len, and the coverage penalty is <= 0.
    With early_stop (fairseq's rule), as soon as K hypotheses that meet the constraints have finished."""
    K = settings.beam
    max_len = live.max_len.view(-1, K)[:, 0]
    last = K - 1 if settings.early_stop else settings.n_best - 1
    complete = finished.scores[:, last].masked_fill(finished.unmet[:, last] > 0, float("-inf"))
    if settings.early_stop:
        return (complete > float("-inf")) | (step + 1 >= max_len)
    bound = live.scores / length_penalty(live.max_len, settings.alpha, settings.length_penalty)
    reachable = bound.view(-1, K).max(dim=1).values
    return (complete >= reachable) | (step + 1 >= max_len)


@STRATEGIES.register("sample")
def sample(model: Seq2SeqModel, src: torch.Tensor, src_mask: torch.Tensor, settings: DecodeSpec,
           generator: torch.Generator | None = None, constraints: Phrases | None = None,
           first: int | None = None) -> list[list[Hypothesis]]:
    """Ancestral sampling with temperature, top-k and nucleus (top-p) filtering; n_best samples each."""
    if constraints is not None:
        raise SeqtoolError("lexical constraints need decode.strategy beam, not sample")
    n = settings.n_best
    enc, state, live, _ = _start(model, src, src_mask, settings, n)
    live.scores.zero_()
    done = torch.zeros_like(live.scores, dtype=torch.bool)
    shortest = int(live.max_len.min())
    for step in range(live.tokens.size(1) - 1):
        out = model.step(live.tokens[:, step], state, enc)
        _record_attention(live, out.attn, step)
        lp = _constrain(out.log_probs.float().clone(), step, live, settings, shortest, first)
        token = torch.multinomial(_filter(lp, settings).exp(), 1, generator=generator).squeeze(1)
        token = token.masked_fill(done, PAD)
        live.scores += lp.gather(1, token.unsqueeze(1)).squeeze(1).masked_fill(done, 0.0)
        live.tokens[:, step + 1] = token
        done |= token == EOS
        state = out.state
        if done.all():
            break
    return _collect_samples(live, src_mask.sum(1), n, settings)


def _filter(lp: torch.Tensor, settings: DecodeSpec) -> torch.Tensor:
    """Log-probabilities at temperature T, renormalised over the top-k / top-p tokens."""
    logits = lp / settings.temperature
    if settings.top_k:
        kth = logits.topk(min(settings.top_k, logits.size(1)), dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p < 1.0:
        sorted_lp, order = torch.log_softmax(logits, 1).sort(dim=1, descending=True)
        outside = sorted_lp.exp().cumsum(1) - sorted_lp.exp() > settings.top_p
        logits = logits.scatter(1, order, sorted_lp.masked_fill(outside, float("-inf")))
    return torch.log_softmax(logits, dim=1)


def _collect_samples(live: Live, src_lengths: torch.Tensor, n: int, settings: DecodeSpec) -> list[list[Hypothesis]]:
    results = []
    steps = live.attn_steps.cpu() if live.attn_steps is not None else None
    widths = src_lengths.tolist()
    for row, toks in enumerate(live.tokens[:, 1:].tolist()):
        if row % n == 0:
            results.append([])
        body = toks[: toks.index(EOS)] if EOS in toks else toks
        lengths = torch.tensor([len(body) + 1])
        score = float(gnmt_score(live.scores[row : row + 1].cpu(), lengths, None, None, alpha=settings.alpha, beta=0.0,
                                 kind=settings.length_penalty))
        attention = None if steps is None else steps[row, : len(body) + 1, : widths[row // n]]
        results[-1].append(Hypothesis(body, score, float(live.scores[row]), attention))
    return [sorted(h, key=lambda x: -x.score) for h in results]
