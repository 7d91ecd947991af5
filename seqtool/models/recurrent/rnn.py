"""Recurrent baselines: an RNN language model and an attentional RNN encoder-decoder.

RNN LM (Mikolov et al. 2010; Zaremba et al. 2014 for dropout between layers, not on the recurrence):
    x_t = E y_{t-1};  h_t = RNN(x_t, h_{t-1});  p(y_t | y_<t) = softmax(W h_t + b)
Tied embeddings (Press and Wolf 2017; Inan et al. 2017) set W = E.

Attentional encoder-decoder (Bahdanau et al. 2015; Luong et al. 2015):
    encoder      m_1..m_S = BiRNN(E_src x_1..x_S)            (forward/backward states concatenated)
    decoder      s_t = RNN([E_tgt y_{t-1}; h~_{t-1}], s_{t-1})  (input feeding: h~_{t-1} is fed back)
    attention    c_t = sum_j a_tj m_j,  a_t = attention(s_t, m)   (bahdanau / general / dot)
    output       h~_t = tanh(W_c [c_t; s_t]);  p(y_t) = softmax(W_o h~_t)
With tied embeddings h~ has the embedding size and W_o = E_tgt (Press and Wolf 2017), which also
halves the cost of the output layer when the hidden size is twice the embedding size.
Without input feeding the decoder RNN runs over the whole target in one fused call and attention
is computed for all positions at once (much faster to train). The decoder starts per layer from the
encoder's final states through a tanh bridge, h_0 = tanh(W_b h_enc) and c_0 = 0 (Bahdanau et al.),
through linear ones, h_0 = W_h h_enc + b_h and c_0 = W_c c_enc + b_c (fairseq's lstm), or from zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from seqtool.models.base import LanguageModel, Rows, Seq2SeqModel, StepOut, VocabSizes
from seqtool.models.components import component_field
from seqtool.models.config import ModelConfig
from seqtool.models.layers import Attention, Dropout
from seqtool.models.recurrent.cells import CELLS, compatibility_problem
from seqtool.models.recurrent.layers import Recurrent, RecurrentEncoder
from seqtool.models.recurrent.norms import NORMS, SiteNorm
from seqtool.registry import MODELS
from seqtool.specials import PAD

Cell = component_field(CELLS)
Norm = component_field(NORMS)
# The names come from the registries (`seqtool keys` lists each cell's and norm's options), not from a copy here.
CELL_HELP = "a registered cell (seqtool/models/recurrent/): a name or {name: ..., options}"
NORM_HELP = "normalization inside the cell: a registered norm (seqtool/models/recurrent/norms.py), or none"


class RecurrentConfig(ModelConfig):
    """The cell and norm keys every recurrent model shares; they must fit together."""

    cell: Cell = Field("lstm", validate_default=True, description=CELL_HELP)
    norm: Norm = Field("none", validate_default=True, description=NORM_HELP)

    @model_validator(mode="after")
    def _cell_takes_norm(self) -> RecurrentConfig:
        problem = compatibility_problem(self.cell, self.norm)
        if problem:
            raise ValueError(problem)
        return self


def init_uniform(module: nn.Module, scale: float | None) -> None:
    """Uniform(-scale, scale) for every parameter (Zaremba et al. 2014; OpenNMT's default 0.1), except
    norm gains and shifts and cells whose paper prescribes their own init (they keep theirs)."""
    if scale is None:
        return
    own = {id(p) for m in module.modules() if isinstance(m, SiteNorm) or getattr(m, "keeps_init", False)
           for p in m.parameters()}
    for p in module.parameters():
        if id(p) not in own:
            nn.init.uniform_(p, -scale, scale)


class RNNLMConfig(RecurrentConfig):
    arch: Literal["rnnlm"] = "rnnlm"
    tasks: ClassVar = ("lm",)
    embed_dim: int = Field(200, gt=0)
    hidden_dim: int = Field(200, gt=0)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1, description="on embeddings, between layers and on outputs")
    tie_embeddings: bool = Field(False, description="share input embedding and output projection")
    init_scale: float | None = Field(0.1, gt=0, description="uniform init range (null: torch defaults)")

    @model_validator(mode="after")
    def _tie_fits(self) -> RNNLMConfig:
        if self.tie_embeddings and self.embed_dim != self.hidden_dim:
            raise ValueError("tie_embeddings needs embed_dim == hidden_dim")
        return self


class RNNLM(LanguageModel):
    def __init__(self, cfg: RNNLMConfig, vocab: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, cfg.embed_dim, padding_idx=PAD)
        self.rnn = Recurrent(cfg.cell, cfg.embed_dim, cfg.hidden_dim, cfg.layers, dropout=cfg.dropout, norm=cfg.norm)
        self.drop = Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_dim, vocab)
        init_uniform(self, cfg.init_scale)
        if cfg.tie_embeddings:
            self.out.weight = self.embed.weight

    def forward(self, inputs: torch.Tensor, state=None):
        hidden, state = self.rnn(self.drop(self.embed(inputs)), state)
        return self.drop(hidden), state


@MODELS.register("rnnlm", config=RNNLMConfig)
def build_rnnlm(cfg: RNNLMConfig, sizes: VocabSizes) -> RNNLM:
    return RNNLM(cfg, sizes.tgt)


class RNNSeq2SeqConfig(RecurrentConfig):
    arch: Literal["rnn_seq2seq"] = "rnn_seq2seq"
    tasks: ClassVar = ("translation",)
    has_attention: ClassVar = True
    embed_dim: int = Field(256, gt=0)
    hidden_dim: int = Field(256, gt=0, description="decoder size")
    encoder_hidden_dim: int | None = Field(
        None, gt=0, description="encoder output size (null: hidden_dim); a bidirectional encoder has half per "
                                "direction, so fairseq's lstm with 256 per direction is 512")
    encoder_layers: int = Field(2, ge=1)
    decoder_layers: int = Field(2, ge=1)
    bidirectional: bool = True
    attention: Literal["bahdanau", "general", "dot"] = "general"
    input_feeding: bool = Field(False, description="feed h~_{t-1} into the decoder (Luong et al.)")
    bridge: Literal["tanh", "linear", "none"] = Field(
        "tanh", description="decoder start state from the encoder's final one: tanh = h_0 tanh(W h_enc), c_0 zero "
                            "(Bahdanau et al.); linear = h_0 and c_0 linear in h_enc and c_enc (fairseq's lstm); "
                            "none = zeros (true/false mean tanh/none)")
    dropout: float = Field(0.2, ge=0, lt=1)
    tie_embeddings: bool = Field(False, description="decoder input embedding = output projection")
    share_embeddings: bool = Field(False, description="encoder and decoder share embeddings (joint vocab)")
    init_scale: float | None = Field(0.1, gt=0, description="uniform init range (null: torch defaults)")

    @field_validator("bridge", mode="before")
    @classmethod
    def _bridge_from_bool(cls, value):
        return {True: "tanh", False: "none"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _shapes_fit(self) -> RNNSeq2SeqConfig:
        if self.bidirectional and self.encoder_size % 2:
            raise ValueError("a bidirectional encoder needs an even encoder_hidden_dim (or hidden_dim)")
        if self.bridge != "none" and self.encoder_layers != self.decoder_layers:
            raise ValueError("bridge needs encoder_layers == decoder_layers")
        return self

    @property
    def encoder_size(self) -> int:
        return self.encoder_hidden_dim or self.hidden_dim


@dataclass
class Encoded(Rows):
    memory: torch.Tensor  # (B, S, M), M the encoder size
    keys: torch.Tensor  # (B, S, A) attention projections of memory
    mask: torch.Tensor  # (B, S)
    final: tuple | None  # decoder start state, tuple of (B, L, H), None without a bridge


@dataclass
class DecoderState(Rows):
    hidden: tuple | None  # (B, L, H) each
    feed: torch.Tensor | None  # (B, H) previous attentional output h~, with input feeding


class RNNSeq2Seq(Seq2SeqModel):
    def __init__(self, cfg: RNNSeq2SeqConfig, sizes: VocabSizes):
        super().__init__()
        self.cfg = cfg
        E, H, M = cfg.embed_dim, cfg.hidden_dim, cfg.encoder_size
        self.src_embed = nn.Embedding(sizes.src, E, padding_idx=PAD)
        self.tgt_embed = self.src_embed if cfg.share_embeddings else nn.Embedding(sizes.tgt, E, padding_idx=PAD)
        self.encoder = RecurrentEncoder(cfg.cell, E, M, cfg.encoder_layers, dropout=cfg.dropout, norm=cfg.norm,
                                        bidirectional_layers=cfg.encoder_layers if cfg.bidirectional else 0)
        self.bridge = nn.Linear(M, H) if cfg.bridge != "none" else None
        self.att_dim = E if cfg.tie_embeddings else H
        self.decoder = Recurrent(cfg.cell, E + self.att_dim * cfg.input_feeding, H, cfg.decoder_layers,
                                 dropout=cfg.dropout, norm=cfg.norm)
        self.bridge_cell = nn.Linear(M, H) if cfg.bridge == "linear" and self.decoder.core == 2 else None
        self.attention = Attention(cfg.attention, H, M)
        self.combine = nn.Linear(M + H, self.att_dim, bias=False)
        self.drop = Dropout(cfg.dropout)
        self.out = nn.Linear(self.att_dim, sizes.tgt)
        init_uniform(self, cfg.init_scale)
        if cfg.tie_embeddings:
            self.out.weight = self.tgt_embed.weight

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Encoded:
        memory, finals = self.encoder(self.drop(self.src_embed(src)), src_mask.sum(1),
                                      full_state=self.bridge_cell is not None)
        start = None
        if self.cfg.bridge == "tanh":
            start = self.decoder.initial_state(torch.tanh(self.bridge(finals[0])))
        elif self.cfg.bridge == "linear":
            start = tuple(project(f) for project, f in zip((self.bridge, self.bridge_cell), finals))  # (h,) or (h, c)
        return Encoded(memory, self.attention.keys(memory), src_mask, start)

    def start(self, enc: Encoded) -> DecoderState:
        feed = enc.memory.new_zeros(enc.memory.size(0), self.att_dim) if self.cfg.input_feeding else None
        return DecoderState(enc.final, feed)

    def _decode(self, emb: torch.Tensor, state: DecoderState, enc: Encoded):
        """emb (B, T, E) -> attentional outputs h~ (B, T, H), attention (B, T, S), next state."""
        x = self.drop(emb)
        if state.feed is not None:
            x = torch.cat([x, state.feed.unsqueeze(1)], dim=-1)
        out, hidden = self.decoder(x, state.hidden)
        context, weights = self.attention(out, enc.keys, enc.memory, enc.mask)
        att_out = torch.tanh(self.combine(torch.cat([context, out], dim=-1)))
        feed = att_out[:, -1] if state.feed is not None else None
        return att_out, weights, DecoderState(hidden, feed)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        enc = self.encode(src, src_mask)
        state = self.start(enc)
        emb = self.tgt_embed(tgt_in)
        if not self.cfg.input_feeding:
            att_out = self._decode(emb, state, enc)[0]
        else:
            steps = []
            for t in range(tgt_in.size(1)):
                out, _, state = self._decode(emb[:, t : t + 1], state, enc)
                steps.append(out)
            att_out = torch.cat(steps, dim=1)
        return self.drop(att_out)

    def step(self, prev: torch.Tensor, state: DecoderState, enc: Encoded) -> StepOut:
        att_out, weights, state = self._decode(self.tgt_embed(prev).unsqueeze(1), state, enc)
        logits = self.out(att_out[:, 0])
        return StepOut(torch.log_softmax(logits.float(), dim=-1), weights[:, 0], state)


@MODELS.register("rnn_seq2seq", config=RNNSeq2SeqConfig)
def build_rnn_seq2seq(cfg: RNNSeq2SeqConfig, sizes: VocabSizes) -> RNNSeq2Seq:
    return RNNSeq2Seq(cfg, sizes)
