"""Greedy, beam and sampling search over the decoder contract (encode / start / step / reorder).

Beam search follows the usual batched algorithm (as in fairseq and Sockeye): every step scores
2K candidates per sentence; EOS candidates among the best K are finalised with the GNMT score
(penalties.py); the best K others continue. A sentence is done when no live hypothesis can still
beat its n-best finished ones (an upper bound that holds under length and coverage penalties) or
at its length limit; done sentences leave the batch. fairseq's rule, done once K hypotheses are
finished, is not used: when the model is confident, K poor early-EOS hypotheses can fill the
finished set before the best one ends. Beam 1 is greedy.
Each sentence's computation is independent of the others, so output does not depend on batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqtool.data.tokenizer import BOS, EOS, PAD
from seqtool.decoding.penalties import gnmt_score, length_penalty
from seqtool.models.base import Rows, Seq2SeqModel

MAX_OUTPUT = 1024


@dataclass(frozen=True)
class SearchSettings:
    beam: int = 5
    alpha: float = 0.0
    beta: float = 0.0
    n_best: int = 1
    max_len_a: float = 1.5
    max_len_b: int = 10
    prune_margin: float | None = None
    min_len: int = 0
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    @classmethod
    def from_spec(cls, spec, **changes) -> SearchSettings:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in spec.model_dump().items() if k in names} | changes)


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids without BOS and EOS
    score: float  # final score: log P / lp + cp
    log_prob: float


@dataclass
class Live(Rows):
    """Search bookkeeping for the sentences still being decoded; K rows per sentence for beams."""

    tokens: torch.Tensor  # (N, t + 1) BOS and the tokens so far
    scores: torch.Tensor  # (N,) cumulative log-probabilities
    attn_sum: torch.Tensor | None  # (N, S) attention mass each source position received
    src_mask: torch.Tensor  # (N, S)
    max_len: torch.Tensor  # (N,) output length limit, EOS included


def search(model: Seq2SeqModel, src: torch.Tensor, src_mask: torch.Tensor, settings: SearchSettings,
           generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
    """Decode a batch; one list of hypotheses (best first) per source row."""
    with torch.inference_mode():
        if settings.sample:
            return sample(model, src, src_mask, settings, generator)
        return beam_search(model, src, src_mask, settings)


def output_limits(src_mask: torch.Tensor, settings: SearchSettings) -> torch.Tensor:
    """max output length a * |x| + b per sentence, |x| without the source EOS."""
    src_len = src_mask.sum(1) - 1
    limit = (settings.max_len_a * src_len.float()).floor().long() + settings.max_len_b
    return limit.clamp(1, MAX_OUTPUT)


def _start(model, src, src_mask, settings, rows_per_sentence: int):
    enc = model.encode(src, src_mask)
    B = src.size(0)
    rows = torch.arange(B, device=src.device).repeat_interleave(rows_per_sentence)
    enc = enc.reorder(rows) if rows_per_sentence > 1 else enc
    first = torch.zeros(B, rows_per_sentence, device=src.device)
    first[:, 1:] = float("-inf")  # K copies of one empty prefix: only one may expand at step 0
    attn = src.new_zeros(rows.numel(), src.size(1), dtype=torch.float32) if settings.beta else None
    live = Live(src.new_full((rows.numel(), 1), BOS), first.view(-1), attn, src_mask[rows],
                output_limits(src_mask, settings)[rows])
    return enc, model.start(enc), live, torch.arange(B, device=src.device)


def _constrain(log_probs: torch.Tensor, step: int, live: Live, min_len: int) -> torch.Tensor:
    """(1) Never emit PAD/BOS; no EOS before min_len; only EOS once the length limit is reached."""
    lp = log_probs.float().clone()
    lp[:, PAD] = lp[:, BOS] = float("-inf")
    if step < min_len:
        lp[:, EOS] = float("-inf")
    at_limit = step + 1 >= live.max_len
    if at_limit.any():
        eos = lp[:, EOS].clone()
        lp[at_limit] = float("-inf")
        lp[at_limit, EOS] = eos[at_limit]
    return lp


def beam_search(model: Seq2SeqModel, src: torch.Tensor, src_mask: torch.Tensor,
                settings: SearchSettings) -> list[list[Hypothesis]]:
    K = settings.beam
    enc, state, live, sentence = _start(model, src, src_mask, settings, K)
    finished = _Finished(src.size(0), K, settings.n_best, src.device)
    for step in range(int(live.max_len.max())):
        out = model.step(live.tokens[:, -1], state, enc)
        lp = _constrain(out.log_probs, step, live, settings.min_len)
        if live.attn_sum is not None:
            live.attn_sum = live.attn_sum + out.attn.float()
        cand = _candidates(live.scores, lp, K, settings.prune_margin)
        _finalize(finished, sentence, live, cand, step, settings)
        live, state = _advance(live, out.state, cand, K)
        done = _done(finished, sentence, live, step, settings)
        if done.all():
            break
        if done.any():
            rows = (~done).repeat_interleave(K).nonzero().squeeze(1)
            live, state, enc, sentence = live.reorder(rows), state.reorder(rows), enc.reorder(rows), sentence[~done]
    return finished.best()


class _Finished:
    """Finished hypotheses per sentence (the K best by final score) and the n_best-th best score."""

    def __init__(self, batch: int, keep: int, n_best: int, device: torch.device):
        self.hyps: list[list[Hypothesis]] = [[] for _ in range(batch)]
        self.keep, self.n_best = keep, n_best
        self.threshold = torch.full((batch,), float("-inf"), device=device)

    def add(self, sentence: int, hyp: Hypothesis) -> None:
        hyps = self.hyps[sentence]
        hyps.append(hyp)
        hyps.sort(key=lambda h: -h.score)
        del hyps[self.keep :]
        if len(hyps) >= self.n_best:
            self.threshold[sentence] = hyps[self.n_best - 1].score

    def best(self) -> list[list[Hypothesis]]:
        return [hyps[: self.n_best] for hyps in self.hyps]


def _done(finished: _Finished, sentence: torch.Tensor, live: Live, step: int, settings: SearchSettings) -> torch.Tensor:
    """(5) A sentence is done when no live row can still beat its n_best-th finished hypothesis, or
    at its length limit. A live row with log-probability s < 0 can at best reach s / lp(max_len):
    log-probabilities only fall, lp only grows up to max_len, and the coverage penalty is <= 0."""
    K = settings.beam
    max_len = live.max_len.view(-1, K)[:, 0]
    bound = live.scores / length_penalty(live.max_len, settings.alpha)
    reachable = bound.view(-1, K).max(dim=1).values
    return (finished.threshold[sentence] >= reachable) | (step + 1 >= max_len)


@dataclass
class Candidates:
    scores: torch.Tensor  # (n, 2K) cumulative log-probabilities, best first
    parents: torch.Tensor  # (n, 2K) row each candidate extends
    tokens: torch.Tensor  # (n, 2K)


def _candidates(scores: torch.Tensor, lp: torch.Tensor, K: int, prune_margin: float | None) -> Candidates:
    """(2) The 2K best one-token extensions of each sentence's K rows."""
    V = lp.size(1)
    total = (scores.unsqueeze(1) + lp).view(-1, K * V)  # (n, K*V)
    cand_scores, index = total.topk(min(2 * K, K * V), dim=1)
    if prune_margin is not None:
        cand_scores = cand_scores.masked_fill(cand_scores < cand_scores[:, :1] - prune_margin, float("-inf"))
    base = torch.arange(total.size(0), device=lp.device).unsqueeze(1) * K
    return Candidates(cand_scores, base + index // V, index % V)


def _finalize(finished: _Finished, sentence, live: Live, cand: Candidates, step: int, settings: SearchSettings) -> None:
    """(3) EOS among a sentence's best K candidates ends a hypothesis, scored by GNMT's s(Y, X)."""
    K = settings.beam
    eos = (cand.tokens[:, :K] == EOS) & (cand.scores[:, :K] > float("-inf"))
    if not eos.any():
        return
    which, slot = eos.nonzero(as_tuple=True)
    rows = cand.parents[which, slot]
    log_prob = cand.scores[which, slot]
    lengths = torch.full_like(log_prob, step + 1)
    attn = live.attn_sum[rows] if live.attn_sum is not None else None
    final = gnmt_score(log_prob, lengths, attn, live.src_mask[rows], alpha=settings.alpha, beta=settings.beta)
    tokens = live.tokens[rows, 1:].tolist()
    for s, toks, score, lp in zip(sentence[which].tolist(), tokens, final.tolist(), log_prob.tolist()):
        finished.add(s, Hypothesis(toks, score, lp))


def _advance(live: Live, state: Rows, cand: Candidates, K: int) -> tuple[Live, Rows]:
    """(4) The best K non-EOS candidates become the new rows (at most K of 2K are EOS)."""
    width = cand.tokens.size(1)
    rank = torch.arange(width, device=cand.tokens.device) + (cand.tokens == EOS) * width
    pick = rank.topk(K, dim=1, largest=False).indices  # (n, K), in candidate order
    parents = cand.parents.gather(1, pick).view(-1)
    moved = live.reorder(parents)
    moved.tokens = torch.cat([moved.tokens, cand.tokens.gather(1, pick).view(-1, 1)], dim=1)
    moved.scores = cand.scores.gather(1, pick).view(-1)
    return moved, state.reorder(parents)


def sample(model: Seq2SeqModel, src: torch.Tensor, src_mask: torch.Tensor, settings: SearchSettings,
           generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
    """Ancestral sampling with temperature, top-k and nucleus (top-p) filtering; n_best samples each."""
    n = settings.n_best
    enc, state, live, _ = _start(model, src, src_mask, settings, n)
    live.scores.zero_()
    done = torch.zeros_like(live.scores, dtype=torch.bool)
    for step in range(int(live.max_len.max())):
        out = model.step(live.tokens[:, -1], state, enc)
        lp = _constrain(out.log_probs, step, live, settings.min_len)
        token = torch.multinomial(_filter(lp, settings).exp(), 1, generator=generator).squeeze(1)
        token = token.masked_fill(done, PAD)
        live.scores += lp.gather(1, token.unsqueeze(1)).squeeze(1).masked_fill(done, 0.0)
        live.tokens = torch.cat([live.tokens, token.unsqueeze(1)], dim=1)
        done |= token == EOS
        state = out.state
        if done.all():
            break
    return _collect_samples(live, src.size(0), n, settings.alpha)


def _filter(lp: torch.Tensor, settings: SearchSettings) -> torch.Tensor:
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


def _collect_samples(live: Live, batch: int, n: int, alpha: float) -> list[list[Hypothesis]]:
    results = []
    for row, toks in enumerate(live.tokens[:, 1:].tolist()):
        if row % n == 0:
            results.append([])
        body = toks[: toks.index(EOS)] if EOS in toks else toks
        lengths = torch.tensor([len(body) + 1])
        score = float(gnmt_score(live.scores[row : row + 1].cpu(), lengths, None, None, alpha=alpha, beta=0.0))
        results[-1].append(Hypothesis(body, score, float(live.scores[row])))
    return [sorted(h, key=lambda x: -x.score) for h in results]
