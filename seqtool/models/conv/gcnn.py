"""Gated convolutional language model (GCNN; Dauphin, Fan, Auli and Grangier, ICML 2017,
arXiv 1612.08083), model `gcnn`.

    E = embed(w_{<i}),  X_0 = W_1 E
    h_l(X) = (X * W + b) (x) sigmoid(X * V + c)          (GLU, eq. 1; * a causal convolution)
    X_l = (h_l(X_{l-1}) + X_{l-1}) * sqrt(0.5)             (residual block; projected where widths change)
    p(w_i | w_{<i}) = adaptive softmax (Grave et al. 2017) or a full softmax of X_L
Causality (sec. 2): every convolution reads k-1 zeros on the left and nothing on the right, so the
output at i never sees w_{>=i}. Residual blocks as in the paper; a block with `bottleneck: b` is the
paper's bottleneck block for deeper models, 1x1 down to b channels, k x 1 at b, 1x1 back up, with one
residual around the three layers. The sqrt(0.5) scaling of residual sums follows the authors'
fairseq fconv_lm (Gehring et al. 2017, sec. 3.5: it keeps the variance of the sum).
Gating ablation (sec. 5.2, fig. 3), `gate`: glu A (x) sigmoid(B), gtu tanh(A) (x) sigmoid(B), relu,
tanh (the last two have C rather than 2C outputs).
Weight normalization (Salimans and Kingma 2016) on every layer but the embedding and the adaptive
softmax, with Kaiming-style initialisation (see conv.py); embeddings N(0, 0.1).
Long text is scored in blocks: the state carried from one block to the next is, per layer, the last
k-1 inputs of its convolution, i.e. exactly the receptive field - 1 previous positions of context
each layer needs, so block-wise scoring equals scoring the whole stream at once at no extra cost.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from seqtool.models.adaptive import AdaptiveSoftmaxSpec, build_adaptive
from seqtool.models.base import LanguageModel, VocabSizes
from seqtool.models.config import ModelConfig
from seqtool.models.conv.layers import (
    GATED,
    SQRT_HALF,
    ConvBlockSpec,
    WindowConv,
    apply_gate,
    conv_std,
    expand_blocks,
    normed_linear,
)
from seqtool.models.layers import Dropout
from seqtool.registry import MODELS
from seqtool.specials import PAD


class GCNNBlockSpec(ConvBlockSpec):
    bottleneck: int | None = Field(
        None, gt=0, description="bottleneck block: 1x1 to this width, the k-wide layer, 1x1 back to channels, "
        "with one residual around the three (null: a plain residual layer)")


def _default_blocks() -> list[GCNNBlockSpec]:
    return [GCNNBlockSpec(channels=256, kernel=4, repeat=6)]


class GCNNConfig(ModelConfig):
    arch: Literal["gcnn"] = "gcnn"
    tasks: ClassVar = ("lm",)
    embed_dim: int = Field(128, gt=0, description="word embedding size")
    blocks: list[GCNNBlockSpec] = Field(default_factory=_default_blocks, min_length=1,
                                        description="layers: list of {channels, kernel, repeat, bottleneck}")
    gate: Literal["glu", "gtu", "relu", "tanh"] = Field("glu", description="gating ablation of Dauphin et al. fig. 3")
    dropout: float = Field(0.1, ge=0, lt=1, description="on the embeddings, convolution inputs and output")
    adaptive_softmax: AdaptiveSoftmaxSpec | None = Field(
        None, description="adaptive softmax (torch AdaptiveLogSoftmaxWithLoss); null for a full softmax")

    def recipe_problems(self, recipe) -> list[str]:
        problems = []
        if self.adaptive_softmax is not None:
            if recipe.train.label_smoothing > 0:
                problems.append("train.label_smoothing needs a full softmax; model.adaptive_softmax has none")
            size = recipe.data.tokenizer.vocab_size
            if size is not None and self.adaptive_softmax.cutoffs[-1] >= size:
                problems.append(f"model.adaptive_softmax.cutoffs {self.adaptive_softmax.cutoffs} must stay below "
                                f"data.tokenizer.vocab_size {size}")
        return problems


class ResidualBlock(nn.Module):
    """(h(X) + X) * sqrt(0.5) where h is one gated causal convolution, or a bottleneck of three."""

    def __init__(self, in_dim: int, spec: GCNNBlockSpec, *, gate: str, dropout: float):
        super().__init__()
        shapes = ([(spec.bottleneck, 1), (spec.bottleneck, spec.kernel), (spec.channels, 1)]
                  if spec.bottleneck else [(spec.channels, spec.kernel)])
        widths = [in_dim] + [channels for channels, _ in shapes]
        self.gate, self.drop = gate, Dropout(dropout)
        self.convs = nn.ModuleList(
            WindowConv(width, channels * (2 if GATED[gate] else 1), kernel, causal=True,
                       std=conv_std(width, kernel, gate=gate, dropout=dropout))
            for width, (channels, kernel) in zip(widths, shapes))
        self.residual = None if in_dim == spec.channels else normed_linear(in_dim, spec.channels,
                                                                           std=math.sqrt(1.0 / in_dim))

    def forward(self, x: torch.Tensor, lefts: list | None) -> tuple[torch.Tensor, list]:
        """x (B, T, C) and each convolution's carried inputs (None at the start of a text) -> output
        (B, T, channels) and the inputs to carry to the next block (the dropped-out ones, as one long
        pass would have used them)."""
        h, next_lefts = x, []
        for i, conv in enumerate(self.convs):
            h = self.drop(h)
            left = None if lefts is None else lefts[i]
            next_lefts.append(conv.next_left(h, left).detach())
            h = apply_gate(conv(h, left), self.gate)
        skip = x if self.residual is None else self.residual(x)
        return (h + skip) * SQRT_HALF, next_lefts


class GCNN(LanguageModel):
    def __init__(self, cfg: GCNNConfig, vocab: int):
        super().__init__()
        p = cfg.dropout
        self.embed = nn.Embedding(vocab, cfg.embed_dim, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, 0.0, 0.1)
        nn.init.zeros_(self.embed.weight[PAD])
        layers = expand_blocks(cfg.blocks)
        widths = [layers[0].channels] + [b.channels for b in layers]
        self.drop = Dropout(p)
        self.fc1 = normed_linear(cfg.embed_dim, widths[0], std=math.sqrt((1 - p) / cfg.embed_dim))
        self.blocks = nn.ModuleList(ResidualBlock(w, b, gate=cfg.gate, dropout=p) for w, b in zip(widths, layers))
        if cfg.adaptive_softmax is None:
            self.out = normed_linear(widths[-1], vocab, std=math.sqrt((1 - p) / widths[-1]))
        else:
            self.adaptive = build_adaptive(cfg.adaptive_softmax, widths[-1], vocab)

    def forward(self, inputs: torch.Tensor, state: list | None = None) -> tuple[torch.Tensor, list]:
        """inputs (B, T) ids and the state after the text before them (None at its start) ->
        features (B, T, C) and the state after these inputs."""
        x = self.fc1(self.drop(self.embed(inputs)))
        next_state = []
        for i, block in enumerate(self.blocks):
            x, lefts = block(x, None if state is None else state[i])
            next_state.append(lefts)
        return self.drop(x), next_state


@MODELS.register("gcnn", config=GCNNConfig)
def build_gcnn(cfg: GCNNConfig, sizes: VocabSizes) -> GCNN:
    return GCNN(cfg, sizes.tgt)
