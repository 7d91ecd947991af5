"""The adaptive softmax (Grave et al. 2017, torch's nn.AdaptiveLogSoftmaxWithLoss) for language models
with large vocabularies: the frequent words (ids below the first cutoff; word vocabularies are sorted by
frequency) get a full softmax over the head, which also holds one entry per tail cluster; rarer words
are reached through their cluster, whose projection is `div_value` times narrower per cluster:
    log p(w) = log p_head(w)                              (w in the head)
    log p(w) = log p_head(cluster(w)) + log p_cluster(w)  (w in a tail cluster)
On a 33k-word vocabulary this is several times cheaper than the full softmax, whose output layer would
otherwise be most of a small language model's arithmetic. A LanguageModel that sets `self.adaptive`
(seqtool/models/base.py) is scored through it.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field, model_validator
from torch import nn

from seqtool.errors import SeqtoolError
from seqtool.models.config import SECTION
from seqtool.specials import PAD


class AdaptiveSoftmaxSpec(BaseModel):
    model_config = SECTION

    cutoffs: list[int] = Field(min_length=1, description="increasing word ids where the head / tail clusters end")
    div_value: float = Field(4.0, gt=1, description="each tail cluster's projection is this much narrower")

    @model_validator(mode="after")
    def _increasing(self) -> AdaptiveSoftmaxSpec:
        if any(b <= a for a, b in zip(self.cutoffs, self.cutoffs[1:])) or self.cutoffs[0] <= 0:
            raise ValueError(f"cutoffs must be positive and increasing, got {self.cutoffs}")
        return self


def build_adaptive(spec: AdaptiveSoftmaxSpec, features: int, vocab: int) -> nn.AdaptiveLogSoftmaxWithLoss:
    if spec.cutoffs[-1] >= vocab:
        raise SeqtoolError(f"model.adaptive_softmax.cutoffs {spec.cutoffs}: the last must be below the "
                           f"vocabulary size {vocab}")
    return nn.AdaptiveLogSoftmaxWithLoss(features, vocab, spec.cutoffs, div_value=spec.div_value)


def adaptive_loss(adaptive: nn.AdaptiveLogSoftmaxWithLoss, features: torch.Tensor,
                  targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL summed over non-pad targets, the same detached) for features (..., D) and targets (...)."""
    keep = targets != PAD
    loss = -adaptive(features[keep], targets[keep]).output.sum()
    return loss, loss.detach()
