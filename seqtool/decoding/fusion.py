"""Shallow fusion of a translation model with a language model of its target vocabulary
(Gulcehre et al., "On Using Monolingual Corpora in Neural Machine Translation", 2015, sec. 4.1),
decoded as one model (the Seq2SeqModel contract):
    score(y | prefix, x) = log p_TM(y | prefix, x) + lambda * log p_LM(y | prefix)
as fairseq's --lm-weight adds them (the sum is not renormalised: beam search ranks by it; sampling
renormalises what it draws from).

The LM keeps the LanguageModel contract, forward(inputs, state) -> (features, state), and was
trained on a stream where EOS precedes every line, so it reads EOS and then the prefix. It is run
on the whole prefix at every step with no carried state (O(T^2) per sentence): the contract's state
is what its task carries between training blocks, which not every LM honours (the Transformer LM
restarts at every block) and which need not be batch-first, so it cannot be reordered with the beam.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqtool.models.base import LanguageModel, Rows, Seq2SeqModel, StepOut
from seqtool.specials import BOS, EOS


@dataclass
class Fused(Rows):
    model: Rows  # the translation model's state
    prefix: torch.Tensor | None  # (N, t) what the LM has read: EOS, then the tokens so far (None at first)


class ShallowFusion(Seq2SeqModel):
    def __init__(self, model: Seq2SeqModel, lm: LanguageModel, weight: float):
        super().__init__()
        self.model, self.lm, self.weight = model, lm, weight

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Rows:
        return self.model.encode(src, src_mask)

    def start(self, enc: Rows) -> Fused:
        return Fused(self.model.start(enc), None)

    def step(self, prev: torch.Tensor, state: Fused, enc: Rows) -> StepOut:
        out = self.model.step(prev, state.model, enc)
        token = torch.where(prev == BOS, EOS, prev).unsqueeze(1)  # the LM's stream has EOS before each line
        prefix = token if state.prefix is None else torch.cat([state.prefix, token], 1)
        features, _ = self.lm(prefix)
        lm_log_probs = torch.log_softmax(self.lm.out(features[:, -1]).float(), dim=-1)
        return StepOut(out.log_probs.float() + self.weight * lm_log_probs, out.attn, Fused(out.state, prefix))
