"""GNMT: the deep residual LSTM encoder-decoder of Wu et al. 2016, "Google's Neural Machine
Translation System" (arXiv 1609.08144), section 3.

Encoder (L_e layers; paper: 8). The bottom layer is bidirectional, forward and backward outputs
concatenated (H/2 units per direction here, so every layer has width H); the others read left to
right. From layer `residual_from` (paper: 3) up each layer adds its input (eq. 6):
    x^1_t = [LSTM_fw(E x_t); LSTM_bw(E x_t)]
    x^i_t = LSTM_i(x^{i-1}_t) + x^{i-1}_t          i >= residual_from
    x^i_t = LSTM_i(x^{i-1}_t)                      otherwise
Decoder (L_d layers). The bottom layer reads the previous target word only; its output is the
attention query over the top encoder layer (a feed-forward net with one hidden layer, eq. 5:
`attention: bahdanau`), and the context a_t is fed, concatenated with the layer input, to every
other decoder layer, which have residual connections from `residual_from` up as in the encoder:
    y^1_t = LSTM_1(E y_{t-1})
    s_tj = v^T tanh(W_q y^1_t + W_k x^{L_e}_j),  p_t = softmax(s_t),  a_t = sum_j p_tj x^{L_e}_j
    y^i_t = LSTM_i([y^{i-1}_t; a_t]) (+ y^{i-1}_t for i >= residual_from)
    p(y_t | y_<t, x) = softmax(W_o y^{L_d}_t + b)
The paper writes the query as the bottom layer's output "from the previous time step": with the
bottom layer reading y_{t-1}, y^1_t is exactly the output that has seen the target prefix y_<t
(the same reading as NVIDIA's and tensorflow/nmt's GNMT). Because the bottom layer gets no context
back (no input feeding), training runs it fused over the whole target, computes attention for all
positions in one batched call, then runs each upper layer fused: no Python loop over time steps,
which is what makes GNMT fast to train. Decoding (`step`) runs one position through all layers
with an explicit, reorderable per-layer state.

Paper tricks implemented: the bidirectional bottom encoder layer only (deep stacks stay
unidirectional so they could be pipelined), residual connections from the third layer (the paper's
8-layer choice; in 2- and 3-layer stacks `residual_from: 2` learns far faster per step on Multi30k, as
the output then sums the bottom layer, whose output is the attention query), attention
from the bottom decoder layer fed to all upper layers, uniform init U(-0.04, 0.04), dropout,
gradient clipping (train.clip_norm), shared wordpieces (`data.tokenizer.kind: wordpiece`, joint)
with shared embeddings, and the paper's beam search (length/coverage penalties and the two
pruning rules, seqtool/decoding/search.py). Additions not in the paper: tied decoder input/output
embeddings (Press and Wolf 2017), with a bias-free projection H -> E when the sizes differ, which
also makes the vocabulary projection cheaper. Not implemented: model parallelism (one layer per
GPU; pointless on one device), int8 matrix multiplies in training (section 6; `train.quantize` fakes them, and
`accumulator_clip` clips c_t and h_t inside every LSTM, though not the residual sums nor with the δ annealing;
`train.quantize.logits` clips the logits), RL
refinement with a GLEU reward (section 5), and the Adam-then-SGD schedule (a recipe choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from seqtool.models.base import Rows, Seq2SeqModel, StepOut, VocabSizes
from seqtool.models.config import ModelConfig
from seqtool.models.layers import Attention, Dropout
from seqtool.models.recurrent.layers import Recurrent, RecurrentEncoder
from seqtool.models.recurrent.rnn import init_uniform
from seqtool.registry import MODELS
from seqtool.specials import PAD


class GNMTConfig(ModelConfig):
    arch: Literal["gnmt"] = "gnmt"
    tasks: ClassVar = ("translation",)
    has_attention: ClassVar = True
    embed_dim: int = Field(512, gt=0, description="word(piece) embedding size")
    hidden_dim: int = Field(512, gt=0, description="LSTM size of every layer (bidirectional layer: half per direction)")
    encoder_layers: int = Field(4, ge=2, le=8, description="encoder LSTM layers; the bottom one is bidirectional")
    decoder_layers: int = Field(4, ge=2, le=8, description="decoder LSTM layers; the bottom one queries attention")
    residual_from: int = Field(3, ge=2, description="residual connections from this layer (1-based) up, both stacks")
    attention: Literal["bahdanau", "general", "dot"] = Field(
        "bahdanau", description="bahdanau = GNMT's one-hidden-layer feed-forward scorer; general/dot are cheaper")
    dropout: float = Field(0.2, ge=0, lt=1, description="on embeddings, between layers and on the top output")
    bridge: bool = Field(False, description="start decoder layer i from tanh(W_b h_i) of encoder layer i's final "
                         "state (tensorflow/nmt's GNMT; the paper starts from zeros); needs equal depths")
    tie_embeddings: bool = Field(False, description="decoder input embedding = output projection")
    share_embeddings: bool = Field(False, description="encoder and decoder share embeddings (joint vocabulary)")
    init_scale: float | None = Field(0.04, gt=0, description="uniform init range (paper: 0.04; null: torch defaults)")
    accumulator_clip: float | None = Field(
        None, gt=0, description="section 6's accumulator clipping: every LSTM's c_t and h_t clamped to [-delta, "
        "delta] at every step (paper: 1 at inference, annealed from 8 in training; here fixed); runs the LSTMs' "
        "time loop instead of the fused kernel (slower: bench/cells.py; null: off)")

    @model_validator(mode="after")
    def _shapes_fit(self) -> GNMTConfig:
        if self.hidden_dim % 2:
            raise ValueError("the bidirectional bottom encoder layer needs an even hidden_dim")
        if self.bridge and self.encoder_layers != self.decoder_layers:
            raise ValueError("bridge needs encoder_layers == decoder_layers")
        return self


@dataclass
class Encoded(Rows):
    memory: torch.Tensor  # (B, S, H) top encoder layer
    keys: torch.Tensor  # (B, S, A) attention projections of memory
    mask: torch.Tensor  # (B, S) True on real source positions
    start: torch.Tensor | None  # (B, L, H) decoder start states from the bridge, None without


@dataclass
class GNMTState(Rows):
    layers: tuple  # per decoder layer (bottom first), its LSTM state (h, c), each (N, 1, H)


class GNMT(Seq2SeqModel):
    def __init__(self, cfg: GNMTConfig, sizes: VocabSizes):
        super().__init__()
        self.cfg = cfg
        E, H = cfg.embed_dim, cfg.hidden_dim
        lstm = {"name": "lstm", "clip": cfg.accumulator_clip} if cfg.accumulator_clip is not None else "lstm"
        self.src_embed = nn.Embedding(sizes.src, E, padding_idx=PAD)
        self.tgt_embed = self.src_embed if cfg.share_embeddings else nn.Embedding(sizes.tgt, E, padding_idx=PAD)
        self.encoder = RecurrentEncoder(lstm, E, H, cfg.encoder_layers, bidirectional_layers=1,
                                        dropout=cfg.dropout, residual_from=cfg.residual_from)
        self.bridge = nn.Linear(H, H) if cfg.bridge else None
        self.bottom = Recurrent(lstm, E, H)
        self.attention = Attention(cfg.attention, H, H)
        self.upper = nn.ModuleList(Recurrent(lstm, 2 * H, H) for _ in range(cfg.decoder_layers - 1))
        self.drop = Dropout(cfg.dropout)
        out_dim = E if cfg.tie_embeddings else H
        self.project = nn.Linear(H, E, bias=False) if out_dim != H else nn.Identity()
        self.out = nn.Linear(out_dim, sizes.tgt)
        init_uniform(self, cfg.init_scale)
        if cfg.tie_embeddings:
            self.out.weight = self.tgt_embed.weight

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Encoded:
        memory, finals = self.encoder(self.drop(self.src_embed(src)), src_mask.sum(1))
        start = torch.tanh(self.bridge(finals[0])) if self.bridge is not None else None  # (B, L, H)
        return Encoded(memory, self.attention.keys(memory), src_mask, start)

    def start(self, enc: Encoded) -> GNMTState:
        """Decoder layers start from zeros (the paper), or with the bridge h_0 = tanh(W_b h^enc), c_0 = 0."""
        zeros = enc.memory.new_zeros(enc.memory.size(0), 1, self.cfg.hidden_dim)
        if enc.start is None:
            return GNMTState(tuple((zeros, zeros) for _ in range(self.cfg.decoder_layers)))
        return GNMTState(tuple((enc.start[:, i : i + 1], zeros) for i in range(self.cfg.decoder_layers)))

    def _decode(self, prev: torch.Tensor, state: GNMTState, enc: Encoded):
        """prev (B, T) previous target ids -> top features (B, T, H), attention (B, T, S), next state.

        Each layer runs over all T positions in one fused call: only the bottom layer feeds the
        attention, so no layer waits for another position's context."""
        bottom, first = self.bottom(self.drop(self.tgt_embed(prev)), state.layers[0])
        context, weights = self.attention(bottom, enc.keys, enc.memory, enc.mask)  # (B, T, H), (B, T, S)
        x, finals = bottom, [first]
        for number, (layer, hidden) in enumerate(zip(self.upper, state.layers[1:]), start=2):
            out, final = layer(torch.cat([self.drop(x), context], dim=-1), hidden)
            x = out + x if number >= self.cfg.residual_from else out
            finals.append(final)
        return x, weights, GNMTState(tuple(finals))

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        enc = self.encode(src, src_mask)
        top = self._decode(tgt_in, self.start(enc), enc)[0]
        return self.drop(self.project(top))

    def step(self, prev: torch.Tensor, state: GNMTState, enc: Encoded) -> StepOut:
        top, weights, state = self._decode(prev.unsqueeze(1), state, enc)
        logits = self.out(self.project(top[:, 0]))
        return StepOut(torch.log_softmax(logits.float(), dim=-1), weights[:, 0], state)


@MODELS.register("gnmt", config=GNMTConfig)
def build_gnmt(cfg: GNMTConfig, sizes: VocabSizes) -> GNMT:
    return GNMT(cfg, sizes)
