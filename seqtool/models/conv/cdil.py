"""CDIL-CNN, the circular dilated convolutional network (Cheng, Khalitov, Yu, Zhang and Yang, "Classification
of long sequential data using circular dilated convolutional neural networks", Neurocomputing 2022,
arXiv 2201.02143), model `cdil`, a SequenceClassifier for task classify; also its baselines by flag.

    x_0 = E[w]                                                  token embeddings, channels first
    x_l = ReLU(Dropout(WN-Conv1d_l(x_{l-1}))) + R_l(x_{l-1})    l = 1..L, kernel k, dilation 2^(l-1)
          R_l = identity, or a 1x1 convolution where the widths differ
    logits = W mean_t x_L[t] + b                                mean over the real positions
Weight normalization (w = g v / ||v||) on the dilated convolutions. Receptive field after L layers:
1 + (k-1)(2^L - 1); `layers: null` takes the fewest layers whose field covers `length` (the paper's
L = log2(N) - 1 falls one position short of N for k = 3). The head averages features over positions,
which equals averaging per-position logits (the paper's "average ensemble").

`padding` picks the model (sec. 3 and its baselines):
    circular   CDIL: symmetric windows, padded by d(k-1)/2 positions taken from the other end of the
               sequence (torch's padding_mode="circular"), so every position sits on a circle and, once
               the field covers it, every output sees the whole sequence
    zeros      DIL: the same symmetric windows over zeros beyond the ends
    causal     TCN: d(k-1) zeros on the left only, so the output at t sees no input after t; read with
               `pool: last` (the last real position) as the authors' TCN reads its last step
Inputs shorter than `length` are padded to it (PAD embeds to zeros), so a sequence wraps around the
same circle, and every output is the same, whatever else shares its batch.

Initialisation as the authors' code behaves: biases and the 1x1 projections N(0, 0.01); the
weight-normed convolutions keep torch's default (their code also writes N(0, 0.01) into those weights,
which weight normalization recomputes from g and v before every forward, so it has no effect).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn.utils import parametrize

from seqtool.models.base import SequenceClassifier, VocabSizes
from seqtool.models.config import ModelConfig
from seqtool.models.conv.layers import WeightNorm
from seqtool.models.layers import Dropout
from seqtool.registry import MODELS
from seqtool.specials import PAD

INIT_STD = 0.01


def receptive_field(kernel: int, layers: int) -> int:
    """Positions one output sees after `layers` layers of dilations 1, 2, ..., 2^(layers-1)."""
    return 1 + (kernel - 1) * (2**layers - 1)


def covering_layers(kernel: int, length: int) -> int:
    """The fewest layers whose receptive field covers `length` positions."""
    layers = 1
    while receptive_field(kernel, layers) < length:
        layers += 1
    return layers


class CDILConfig(ModelConfig):
    arch: Literal["cdil"] = "cdil"
    tasks: ClassVar = ("classify",)
    length: int = Field(1024, gt=0, description="sequence length the receptive field covers; shorter inputs "
                        "are padded to it (at least the data's longest sequence)")
    embed_dim: int = Field(32, gt=0, description="token embedding size")
    channels: int = Field(32, gt=0, description="channels of every convolution (paper: 32 synthetic, 64 LRA)")
    kernel: int = Field(3, ge=2, description="kernel width k (odd for symmetric padding)")
    layers: int | None = Field(None, ge=1, description="dilated layers, dilation doubling from 1 (null: the fewest "
                               "whose receptive field 1 + (k-1)(2^L - 1) covers length)")
    padding: Literal["circular", "zeros", "causal"] = Field(
        "circular", description="circular: CDIL; zeros: DIL (symmetric over zeros); causal: TCN (left zeros)")
    pool: Literal["mean", "last"] = Field("mean", description="mean of the features over real positions (CDIL), "
                                          "or the last real position's (the TCN baseline)")
    dropout: float = Field(0.0, ge=0, lt=1, description="on each convolution's output, before the ReLU")

    @model_validator(mode="after")
    def _fits(self) -> CDILConfig:
        if self.padding != "causal" and self.kernel % 2 == 0:
            raise ValueError(f"kernel: {self.padding} padding needs an odd kernel (got {self.kernel})")
        widest = 2 ** (self.depth() - 1) * (self.kernel - 1) // 2
        if self.padding == "circular" and widest > self.length:
            fewest = covering_layers(self.kernel, self.length)
            raise ValueError(f"layers: the last layer's circular padding ({widest}) wraps more than once around "
                             f"length {self.length}; use fewer layers (null: {fewest})")
        return self

    def depth(self) -> int:
        return self.layers or covering_layers(self.kernel, self.length)

    def recipe_problems(self, recipe) -> list[str]:
        longest = recipe.data.longest()
        if longest > self.length:
            return [f"model.length {self.length} is shorter than the data's longest sequence ({longest}); "
                    "the receptive field would not cover it"]
        return []


class DilatedBlock(nn.Module):
    """x -> ReLU(Dropout(WN-Conv1d(x))) + R(x), channels first (B, C, T)."""

    def __init__(self, cfg: CDILConfig, in_dim: int, dilation: int):
        super().__init__()
        symmetric = cfg.padding != "causal"
        self.left = 0 if symmetric else dilation * (cfg.kernel - 1)
        self.conv = nn.Conv1d(in_dim, cfg.channels, cfg.kernel, dilation=dilation,
                              padding=dilation * (cfg.kernel - 1) // 2 if symmetric else 0,
                              padding_mode="circular" if cfg.padding == "circular" else "zeros")
        nn.init.normal_(self.conv.bias, 0.0, INIT_STD)
        parametrize.register_parametrization(self.conv, "weight", WeightNorm(), unsafe=True)
        self.res = nn.Conv1d(in_dim, cfg.channels, 1) if in_dim != cfg.channels else None
        if self.res is not None:
            nn.init.normal_(self.res.weight, 0.0, INIT_STD)
            nn.init.normal_(self.res.bias, 0.0, INIT_STD)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(nn.functional.pad(x, (self.left, 0)) if self.left else x)
        return torch.relu(self.drop(y)) + (x if self.res is None else self.res(x))


class CDIL(SequenceClassifier):
    def __init__(self, cfg: CDILConfig, sizes: VocabSizes):
        super().__init__()
        self.length, self.pool = cfg.length, cfg.pool
        self.embed = nn.Embedding(sizes.src, cfg.embed_dim, padding_idx=PAD)
        widths = [cfg.embed_dim] + [cfg.channels] * cfg.depth()
        self.blocks = nn.Sequential(*(DilatedBlock(cfg, widths[i], 2**i) for i in range(cfg.depth())))
        self.out = nn.Linear(cfg.channels, sizes.tgt)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        short = max(0, self.length - tokens.size(1))
        tokens = nn.functional.pad(tokens, (0, short), value=PAD)
        mask = nn.functional.pad(mask, (0, short), value=False)
        x = self.blocks(self.embed(tokens).transpose(1, 2))  # (B, C, T)
        if self.pool == "last":
            features = x[torch.arange(x.size(0), device=x.device), :, mask.sum(1) - 1]
        else:
            weights = mask.unsqueeze(1).to(x.dtype)
            features = (x * weights).sum(2) / weights.sum(2)
        return self.out(features)


@MODELS.register("cdil", config=CDILConfig)
def build_cdil(cfg: CDILConfig, sizes: VocabSizes) -> CDIL:
    return CDIL(cfg, sizes)
