"""Forced decoding: the log-probability a model gives to given outputs.

For a source X and a given target Y = y_1 .. y_n, with y_{n+1} = EOS:
    log P(Y | X) = sum_{t=1}^{n+1} log p(y_t | y_<t, X)
and the score search ranks finished hypotheses by (penalties.py, GNMT's s(Y, X)):
    s(Y, X) = log P(Y | X) / lp(|Y|) + cp(X; Y),   |Y| = n + 1
The target is fed token by token through the decoder contract (encode / start / step), as search
extends a hypothesis, under the same autocast: a given output gets the log-probability and score
search reports for it (`translate --n-best`), and every model search can decode can be scored,
whether or not it has a teacher-forced forward.

A language model scores each line on its own, after EOS (in its training stream every line follows
a line end), predicting the line's tokens and the EOS that ends it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from seqtool.data.batching import pad_rows
from seqtool.data.textio import chunked
from seqtool.data.vocab import Vocabs
from seqtool.decoding.penalties import gnmt_score
from seqtool.decoding.translate import CHUNK, decode_batches, encode_truncated
from seqtool.models.base import LanguageModel, Seq2SeqModel
from seqtool.recipe.schema import DecodeSpec
from seqtool.specials import BOS, EOS, PAD
from seqtool.util.precision import autocast


@dataclass
class Forced:
    log_prob: float  # log P(Y | X), the final EOS included
    score: float  # s(Y, X): log_prob under the settings' length and coverage penalties
    token_log_probs: list[float]  # log p(y_t | y_<t, X) of each target token, then of EOS

    @property
    def tokens(self) -> int:
        return len(self.token_log_probs)


def force_ids(model: Seq2SeqModel, sources: list[np.ndarray], targets: list[np.ndarray], settings: DecodeSpec, *,
              device: torch.device) -> list[Forced]:
    """Scores of already-encoded pairs, in input order; batched by the longer side as decoding is."""
    results: list[Forced | None] = [None] * len(sources)
    lengths = np.fromiter((max(len(s), len(t)) for s, t in zip(sources, targets)), np.int64, count=len(sources))
    for index in decode_batches(lengths, settings.batch_tokens, settings.batch_sentences):
        src = pad_rows([sources[i] for i in index], suffix=EOS).to(device)
        tgt = pad_rows([targets[i] for i in index], suffix=EOS).to(device)
        for i, forced in zip(index, _force_batch(model, src, tgt, settings)):
            results[i] = forced
    return results


def _force_batch(model: Seq2SeqModel, src: torch.Tensor, tgt: torch.Tensor, settings: DecodeSpec) -> list[Forced]:
    src_mask, real = src != PAD, tgt != PAD
    prev = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], 1)
    attn_sum = torch.zeros(src.shape, device=src.device) if settings.beta else None
    steps = []
    with torch.inference_mode(), autocast(settings.precision, src.device):
        enc = model.encode(src, src_mask)
        state = model.start(enc)
        for t in range(tgt.size(1)):
            out = model.step(prev[:, t], state, enc)
            steps.append(out.log_probs.float().gather(1, tgt[:, t : t + 1]))
            if attn_sum is not None:
                attn_sum += out.attn.float() * real[:, t : t + 1]
            state = out.state
    token_lp = torch.cat(steps, 1).masked_fill(~real, 0.0)
    lengths = real.sum(1)
    log_prob = token_lp.sum(1)
    score = gnmt_score(log_prob, lengths, attn_sum, src_mask, alpha=settings.alpha, beta=settings.beta,
                       kind=settings.length_penalty)
    return [Forced(lp, s, row[:n]) for lp, s, row, n in zip(log_prob.tolist(), score.tolist(), token_lp.tolist(),
                                                            lengths.tolist())]


def force_lines(model: Seq2SeqModel, vocabs: Vocabs, pairs: Iterable[tuple[str, str]], settings: DecodeSpec, *,
                device: torch.device, warn: Callable[[str], None] = lambda _: None) -> Iterator[Forced]:
    """Scores of raw (source, target) line pairs, in order. Sources longer than decode.max_src_len are
    truncated as `translate` truncates them, targets longer than search could output (decode.max_output,
    EOS included) likewise; each with a warning naming the line."""
    number = 1
    for chunk in chunked(pairs, CHUNK):
        sources = encode_truncated(vocabs.src, [s for s, _ in chunk], settings.max_src_len, "decode.max_src_len",
                                   first=number, warn=warn)
        targets = encode_truncated(vocabs.tgt, [t for _, t in chunk], settings.max_output - 1, "decode.max_output-1",
                                   side="target", first=number, warn=warn)
        number += len(chunk)
        yield from force_ids(model, sources, targets, settings, device=device)


def lm_line_log_probs(model: LanguageModel, vocabs: Vocabs, lines: Iterable[str], *, batch_tokens: int,
                      device: torch.device, precision: str = "fp32") -> Iterator[Forced]:
    """Each line's log-probability under a language model (its tokens and final EOS, after an EOS);
    the score is the log-probability (nothing is searched)."""
    for chunk in chunked(lines, CHUNK):
        ids = [np.asarray(row, dtype=np.int64) for row in vocabs.src.encode(chunk)]
        results: list[Forced | None] = [None] * len(ids)
        for index in decode_batches(np.fromiter(map(len, ids), np.int64, count=len(ids)), batch_tokens):
            inputs = pad_rows([ids[i] for i in index], prefix=EOS).to(device)
            targets = pad_rows([ids[i] for i in index], suffix=EOS).to(device)
            with torch.inference_mode(), autocast(precision, device):
                token_lp = model.target_log_probs(model(inputs)[0], targets)
            for i, row, n in zip(index, token_lp.tolist(), (targets != PAD).sum(1).tolist()):
                results[i] = Forced(sum(row[:n]), sum(row[:n]), row[:n])
        yield from results
