"""Ensembles of translation models, decoded as one model (the Seq2SeqModel contract), so every
search strategy takes them unchanged.

Each step mixes the members' next-token distributions linearly, with weights w_m (normalised to sum
to 1), as fairseq's and Sockeye's default ensembles do:
    log p(y | prefix, x) = log sum_m w_m p_m(y | prefix, x) = logsumexp_m (log w_m + log p_m(y | prefix, x))
(Marian instead adds weighted log-probabilities, a log-linear mix; the linear mix stays a distribution,
so scores and length penalties mean what they mean for one model). The attention search sees is the
weighted mean of the members' that have one. All members read the same source ids and predict over
one target vocabulary; the caller checks both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from seqtool.models.base import Rows, Seq2SeqModel, StepOut


@dataclass
class Members(Rows):
    """One reorderable state (or encoder output) per member."""

    parts: tuple


class Ensemble(Seq2SeqModel):
    def __init__(self, models: list[Seq2SeqModel], weights: list[float] | None = None):
        super().__init__()
        weights = weights or [1.0] * len(models)
        if len(weights) != len(models) or min(weights) <= 0:
            raise ValueError("one positive weight per member")
        self.members = nn.ModuleList(models)
        self.log_weights = [math.log(w / sum(weights)) for w in weights]

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Members:
        return Members(tuple(m.encode(src, src_mask) for m in self.members))

    def start(self, enc: Members) -> Members:
        return Members(tuple(m.start(e) for m, e in zip(self.members, enc.parts)))

    def step(self, prev: torch.Tensor, state: Members, enc: Members) -> StepOut:
        outs = [m.step(prev, s, e) for m, s, e in zip(self.members, state.parts, enc.parts)]
        weighted = torch.stack([o.log_probs.float() + w for o, w in zip(outs, self.log_weights)])
        return StepOut(torch.logsumexp(weighted, dim=0), self._attention(outs), Members(tuple(o.state for o in outs)))

    def _attention(self, outs: list[StepOut]) -> torch.Tensor | None:
        having = [(o.attn.float(), math.exp(w)) for o, w in zip(outs, self.log_weights) if o.attn is not None]
        if not having:
            return None
        return sum(a * w for a, w in having) / sum(w for _, w in having)
