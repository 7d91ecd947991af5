"""Convolutional sequence to sequence learning (ConvS2S; Gehring, Auli, Grangier, Yarats and Dauphin,
ICML 2017, arXiv 1705.03122), model `convs2s`.

Embeddings (sec. 3.1): e_j = w_j + p_j, a word embedding plus a learned absolute position embedding,
on both sides; linear maps project between the embedding size f and the convolution widths.
Blocks (sec. 3.2): Y = W [h_{i-k/2} .. h_{i+k/2}] + b in R^{2d}, v([A B]) = A * sigmoid(B) (GLU), and
    h^l_i = (v(Y) + h^{l-1}_i) * sqrt(0.5)
with a linear projection on the residual where the width changes. The encoder's convolutions are
centred; the decoder's are causal (k-1 zeros on the left only).
Multi-step attention (sec. 3.3), a separate attention in every decoder layer l:
    d^l_i = (W^l_d h^l_i + b^l_d + g_i) * sqrt(0.5)      g_i: embedding of the previous target
    a^l_ij = softmax_j(d^l_i . z_j)                      z_j: encoder output (keys)
    c^l_i = m * sqrt(1/m) * sum_j a^l_ij (z_j + e_j) * sqrt(0.5)    values add the source embedding
and c^l_i, projected back to the layer's width, is added to h^l_i (residual sum, scaled by sqrt(0.5));
m is the number of source tokens.
Tricks, with the reason (sec. 3.4-3.5):
* sqrt(0.5) on every residual sum, and on d and on z + e: keeps the variance of a sum of two terms
  equal to that of its inputs.
* m * sqrt(1/m) on the attention context: undoes the variance change of a weighted average over m
  vectors, assuming uniform attention.
* The encoder's gradients are scaled by 1/(number of attention layers): every decoder layer's
  attention sends gradient into the encoder, which would otherwise receive L times too much
  (fairseq uses 1/(2L); we follow the paper).
* Weight normalization on every layer except the embeddings; initialisation N(0, 0.1) for the
  embeddings, N(0, sqrt(4p/n)) for layers feeding a GLU and N(0, sqrt(p/n)) for the others
  (p the keep probability of the dropout on their input, n their fan-in), so that activations keep
  their variance through the network.
* Dropout on the embeddings, on the input of every convolution and on the decoder output.
Incremental decoding keeps, per decoder layer, the last k-1 inputs of its convolution (batch-first,
in the reorderable state), so a search step costs one position; `step` returns the mean attention
over layers (as fairseq does) for the coverage penalty and alignments, or one layer's
(`attention_layer`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from seqtool.models.base import Rows, Seq2SeqModel, StepOut, VocabSizes
from seqtool.models.config import ModelConfig, position_problems
from seqtool.models.conv.layers import (
    SQRT_HALF,
    ConvBlockSpec,
    WindowConv,
    conv_std,
    expand_blocks,
    normed_linear,
    scale_grad,
)
from seqtool.models.layers import Dropout
from seqtool.registry import MODELS
from seqtool.specials import PAD


def _blocks(channels: int, repeat: int) -> list[ConvBlockSpec]:
    return [ConvBlockSpec(channels=channels, kernel=3, repeat=repeat)]


class ConvS2SConfig(ModelConfig):
    arch: Literal["convs2s"] = "convs2s"
    tasks: ClassVar = ("translation",)
    has_attention: ClassVar = True
    embed_dim: int = Field(256, gt=0, description="word and position embedding size (both sides)")
    out_embed_dim: int = Field(256, gt=0, description="decoder output size before the vocabulary projection")
    encoder: list[ConvBlockSpec] = Field(default_factory=lambda: _blocks(256, 4), min_length=1,
                                         description="encoder layers: list of {channels, kernel, repeat}")
    decoder: list[ConvBlockSpec] = Field(default_factory=lambda: _blocks(256, 3), min_length=1,
                                         description="decoder layers (causal, one attention each)")
    max_positions: int = Field(1024, gt=0, description="learned position embeddings per side (longest sequence)")
    dropout: float = Field(0.2, ge=0, lt=1, description="on embeddings, convolution inputs and decoder output")
    share_embeddings: bool = Field(False, description="encoder and decoder share word embeddings (joint vocab)")
    attention_layer: int | None = Field(None, description="decoder layer whose attention search sees (coverage "
                                        "penalty, alignments; -1 the last); null: the mean over layers")

    @model_validator(mode="after")
    def _attention_layer_exists(self) -> ConvS2SConfig:
        layers = len(expand_blocks(self.decoder))
        if self.attention_layer is not None and not -layers <= self.attention_layer < layers:
            raise ValueError(f"attention_layer {self.attention_layer} is not one of the {layers} decoder layers")
        return self

    def recipe_problems(self, recipe) -> list[str]:
        return position_problems(recipe, self.max_positions)


@dataclass
class Encoded(Rows):
    keys: torch.Tensor  # (B, S, E) encoder outputs z
    values: torch.Tensor  # (B, S, E) (z + e) * sqrt(0.5)
    mask: torch.Tensor  # (B, S) True on real tokens
    scale: torch.Tensor  # (B, 1, 1) m * sqrt(1/m) = sqrt(m), m real source tokens


@dataclass
class DecoderState(Rows):
    lefts: tuple  # per decoder layer, (N, k-1, C) the last k-1 inputs of its convolution
    position: torch.Tensor  # (N,) position of the next target token


class Embedding(nn.Module):
    """e = w + p (word plus learned position embedding), both N(0, 0.1) as in sec. 3.5."""

    def __init__(self, vocab: int, dim: int, max_positions: int, words: nn.Embedding | None = None):
        super().__init__()
        self.words = words if words is not None else _embedding(vocab, dim, PAD)
        self.positions = _embedding(max_positions, dim, None)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.words(tokens) + self.positions(positions)


def _embedding(count: int, dim: int, padding_idx: int | None) -> nn.Embedding:
    embed = nn.Embedding(count, dim, padding_idx=padding_idx)
    nn.init.normal_(embed.weight, 0.0, 0.1)
    if padding_idx is not None:
        nn.init.zeros_(embed.weight[padding_idx])
    return embed


class ConvLayer(nn.Module):
    """Dropout, convolution and GLU; the residual (projected where the width changes) is the caller's."""

    def __init__(self, in_dim: int, spec: ConvBlockSpec, *, causal: bool, dropout: float):
        super().__init__()
        self.drop = Dropout(dropout)
        self.conv = WindowConv(in_dim, 2 * spec.channels, spec.kernel, causal=causal,
                               std=conv_std(in_dim, spec.kernel, gate="glu", dropout=dropout))
        self.residual = (None if in_dim == spec.channels
                         else normed_linear(in_dim, spec.channels, std=math.sqrt(1.0 / in_dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.glu(self.conv(self.drop(x)), dim=-1)

    def step(self, x: torch.Tensor, left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, left = self.conv.step(self.drop(x), left)
        return nn.functional.glu(y, dim=-1), left

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.residual is None else self.residual(x)


class Encoder(nn.Module):
    def __init__(self, cfg: ConvS2SConfig, embed: Embedding):
        super().__init__()
        layers = expand_blocks(cfg.encoder)
        widths = [layers[0].channels] + [spec.channels for spec in layers]
        self.embed, self.drop = embed, Dropout(cfg.dropout)
        self.fc1 = normed_linear(cfg.embed_dim, widths[0], std=math.sqrt((1 - cfg.dropout) / cfg.embed_dim))
        self.layers = nn.ModuleList(ConvLayer(w, spec, causal=False, dropout=cfg.dropout)
                                    for w, spec in zip(widths, layers))
        self.fc2 = normed_linear(widths[-1], cfg.embed_dim, std=math.sqrt(1.0 / widths[-1]))
        self.grad_factor = 1.0 / len(expand_blocks(cfg.decoder))

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor) -> Encoded:
        positions = torch.arange(src.size(1), device=src.device).unsqueeze(0)
        emb = self.drop(self.embed(src, positions))  # (B, S, E)
        pad = ~src_mask.unsqueeze(-1)
        x = self.fc1(emb)
        for layer in self.layers:
            # zeros at padded positions, so a row computes the same as it would unpadded
            x = x.masked_fill(pad, 0.0)
            x = (layer(x) + layer.skip(x)) * SQRT_HALF
        keys = scale_grad(self.fc2(x).masked_fill(pad, 0.0), self.grad_factor)
        m = src_mask.sum(1).clamp(min=1).to(keys.dtype)
        return Encoded(keys, (keys + emb) * SQRT_HALF, src_mask, m.sqrt().view(-1, 1, 1))


class Attention(nn.Module):
    """One decoder layer's attention (sec. 3.3): queries from its conv output and the target embedding."""

    def __init__(self, channels: int, embed_dim: int):
        super().__init__()
        self.query = normed_linear(channels, embed_dim, std=math.sqrt(1.0 / channels))
        self.back = normed_linear(embed_dim, channels, std=math.sqrt(1.0 / embed_dim))

    def forward(self, h: torch.Tensor, target_embed: torch.Tensor, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, T, C), target_embed (B, T, E) -> (h + W c) * sqrt(0.5) (B, T, C), weights (B, T, S)."""
        d = (self.query(h) + target_embed) * SQRT_HALF
        scores = torch.bmm(d, enc.keys.transpose(1, 2)).masked_fill(~enc.mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights, enc.values) * enc.scale
        return (self.back(context) + h) * SQRT_HALF, weights


class ConvS2S(Seq2SeqModel):
    def __init__(self, cfg: ConvS2SConfig, sizes: VocabSizes):
        super().__init__()
        E, p = cfg.embed_dim, cfg.dropout
        src_embed = Embedding(sizes.src, E, cfg.max_positions)
        words = src_embed.words if cfg.share_embeddings else None
        self.encoder = Encoder(cfg, src_embed)
        self.embed = Embedding(sizes.tgt, E, cfg.max_positions, words)
        layers = expand_blocks(cfg.decoder)
        widths = [layers[0].channels] + [spec.channels for spec in layers]
        self.drop = Dropout(p)
        self.fc1 = normed_linear(E, widths[0], std=math.sqrt((1 - p) / E))
        self.layers = nn.ModuleList(ConvLayer(w, spec, causal=True, dropout=p) for w, spec in zip(widths, layers))
        self.attention = nn.ModuleList(Attention(spec.channels, E) for spec in layers)
        self.fc2 = normed_linear(widths[-1], cfg.out_embed_dim, std=math.sqrt(1.0 / widths[-1]))
        self.out = normed_linear(cfg.out_embed_dim, sizes.tgt, std=math.sqrt((1 - p) / cfg.out_embed_dim))
        self.attention_layer = cfg.attention_layer

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Encoded:
        return self.encoder(src, src_mask)

    def _decode(self, tokens: torch.Tensor, positions: torch.Tensor, enc: Encoded, lefts: tuple | None):
        """tokens, positions (B, T) -> features (B, T, D), attention (B, T, S) (the mean over layers, or
        `attention_layer`'s), and the layers' next `lefts` when stepping (lefts given)."""
        g = self.drop(self.embed(tokens, positions))  # (B, T, E) target embeddings
        x = self.fc1(g)
        every, next_lefts = [], []
        for i, (layer, attention) in enumerate(zip(self.layers, self.attention)):
            if lefts is None:
                h = layer(x)
            else:
                h, left = layer.step(x, lefts[i])
                next_lefts.append(left)
            h, weights = attention(h, g, enc)
            x = (h + layer.skip(x)) * SQRT_HALF
            every.append(weights)
        attn = sum(every) / len(every) if self.attention_layer is None else every[self.attention_layer]
        return self.drop(self.fc2(x)), attn, tuple(next_lefts)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        enc = self.encode(src, src_mask)
        positions = torch.arange(tgt_in.size(1), device=tgt_in.device).unsqueeze(0)
        return self._decode(tgt_in, positions, enc, None)[0]

    def start(self, enc: Encoded) -> DecoderState:
        N = enc.keys.size(0)
        lefts = tuple(enc.keys.new_zeros(N, layer.conv.kernel - 1, layer.conv.in_dim) for layer in self.layers)
        return DecoderState(lefts, torch.zeros(N, dtype=torch.long, device=enc.keys.device))

    def step(self, prev: torch.Tensor, state: DecoderState, enc: Encoded) -> StepOut:
        features, attn, lefts = self._decode(prev.unsqueeze(1), state.position.unsqueeze(1), enc, state.lefts)
        log_probs = torch.log_softmax(self.out(features[:, 0]).float(), dim=-1)
        return StepOut(log_probs, attn[:, 0], DecoderState(lefts, state.position + 1))


@MODELS.register("convs2s", config=ConvS2SConfig)
def build_convs2s(cfg: ConvS2SConfig, sizes: VocabSizes) -> ConvS2S:
    return ConvS2S(cfg, sizes)
