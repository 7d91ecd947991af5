"""A recurrent sequence classifier for task classify (a SequenceClassifier): the recurrent stack of
rnnlm (any registered cell and norm) over embedded tokens, classified from its last real step.

    e_t = E[w_t];  h_t = RNN(e_t, h_{t-1});  logits = W h_n + b      (n: the sequence's last token)
CDIL-CNN's recurrent baselines (Cheng et al. 2022; card 17): an LSTM or GRU of 128 units whose final
output is classified, as in the authors' net_rnn (they read step N of fixed-length sequences; with
padding this reads each sequence's own last step, which padding after it never reaches).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from seqtool.errors import SeqtoolError
from seqtool.models.base import SequenceClassifier, VocabSizes
from seqtool.models.layers import Dropout
from seqtool.models.recurrent.layers import Recurrent
from seqtool.models.recurrent.rnn import RecurrentConfig
from seqtool.registry import MODELS
from seqtool.specials import PAD


class RNNClassifierConfig(RecurrentConfig):
    arch: Literal["rnn_classifier"] = "rnn_classifier"
    tasks: ClassVar = ("classify",)
    embed_dim: int = Field(32, gt=0, description="token embedding size")
    hidden_dim: int = Field(128, gt=0, description="units per recurrent layer (CDIL-CNN's baselines: 128)")
    layers: int = Field(1, ge=1, description="recurrent layers")
    dropout: float = Field(0.0, ge=0, lt=1, description="on the embeddings, between layers and before the classifier")


class RNNClassifier(SequenceClassifier):
    def __init__(self, cfg: RNNClassifierConfig, sizes: VocabSizes):
        super().__init__()
        self.embed = nn.Embedding(sizes.src, cfg.embed_dim, padding_idx=PAD)
        try:
            self.rnn = Recurrent(cfg.cell, cfg.embed_dim, cfg.hidden_dim, cfg.layers, dropout=cfg.dropout,
                                 norm=cfg.norm)
        except ValueError as err:
            raise SeqtoolError(f"model.cell: {err}") from None
        self.drop = Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_dim, sizes.tgt)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        outputs = self.rnn(self.drop(self.embed(tokens)), mask=mask)[0]  # (B, T, H)
        last = mask.sum(1) - 1
        return self.out(self.drop(outputs[torch.arange(tokens.size(0), device=tokens.device), last]))


@MODELS.register("rnn_classifier", config=RNNClassifierConfig)
def build_rnn_classifier(cfg: RNNClassifierConfig, sizes: VocabSizes) -> RNNClassifier:
    return RNNClassifier(cfg, sizes)
