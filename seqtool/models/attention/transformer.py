"""The Transformer (Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser and Polosukhin, NeurIPS 2017,
arXiv 1706.03762): encoder-decoder `transformer` and decoder-only language model `transformer_lm`.

Attention (sec. 3.2), h heads of size d_k = d / h:
    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V
    MultiHead(Q, K, V) = Concat(head_1 .. head_h) W^O,   head_i = Attention(Q W^Q_i, K W^K_i, V W^V_i)
computed by torch's F.scaled_dot_product_attention; keys at source padding are masked out, and the
decoder's (and the LM's) self-attention is causal (position i sees positions <= i).
Feed-forward (sec. 3.3): FFN(x) = act(x W_1 + b_1) W_2 + b_2 (act ReLU in the paper, or GELU).
Embeddings (sec. 3.4-3.5): x_i = sqrt(d) E[w_i] + P_i, with sinusoidal positions
    P(pos, 2i) = sin(pos / 10000^(2i/d)),   P(pos, 2i+1) = cos(pos / 10000^(2i/d))
or learned ones (P a table of max_positions rows, as in BERT/GPT).
Layers (sec. 3.1): every sub-layer F (self-attention, cross-attention over the encoder output in
decoder layers, feed-forward) is wrapped with dropout and a residual connection and layer norm,
    post-norm (the paper):                     x <- LayerNorm(x + Dropout(F(x)))
    pre-norm (Wang et al. 2019; Xiong et al. 2020): x <- x + Dropout(F(LayerNorm(x))), and one final
                                               LayerNorm after each stack
(`norm_first`; pre-norm trains without warm-up at depth, post-norm is the paper's and fairseq's default).
Dropout (sec. 5.4) on the embedding sums and on every sub-layer output; optionally also on the
attention weights (attention_dropout) and after the FFN activation (activation_dropout), as fairseq.
Output: p(y_t | y_<t, x) = softmax(W_o h_t), W_o tied to the decoder's input embedding when
tie_embeddings (sec. 3.4, Press and Wolf 2017); share_embeddings also shares the encoder's (joint vocab).
Initialisation as fairseq's (the paper gives none): W^Q, W^K, W^V Xavier-uniform with gain 1/sqrt(2) each,
the bound sqrt(6 / 4d) of one (3d, d) in-projection; W^O Xavier-uniform with a zero bias; the feed-forward
layers and the other biases torch's nn.Linear default U(-1/sqrt(fan_in), 1/sqrt(fan_in)); embeddings
N(0, d^-1/2) with the padding row zero. Xavier-uniform everywhere with zero biases (which starts W_2, 1024 -> 256,
2.2x larger) reached 24.85 test BLEU after 500 updates at the fairseq anchor's settings, this 29.36
(bench/README.md, the Transformer against fairseq).

Incremental decoding: the decoder state keeps every layer's self-attention keys and values of the
prefix (N, h, t, d_k), batch-first so search can reorder it, and grows by one position a step; the
cross-attention keys and values of the encoder output are computed once, in `encode`, and kept once
per sentence: a beam's K rows attend to them together (Encoded), which made beam-5 decoding on
Multi30k 1.45x faster (bench/README.md, issue 22). `step` returns
the cross-attention weights of one decoder layer (`attention_layer`, the last by default), averaged
over heads, for the coverage penalty and alignment.
The LM ignores the state the LM task carries between blocks: each block is scored with the context
inside it only (absolute positions cannot extend across blocks the way a recurrent state does), so
its perplexity is that of a model with block_len words of context at most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from seqtool.models.base import LanguageModel, Rows, Seq2SeqModel, StepOut, VocabSizes
from seqtool.models.config import ModelConfig, position_problems
from seqtool.models.layers import Dropout, sinusoids
from seqtool.registry import MODELS
from seqtool.specials import PAD


class TransformerLayersConfig(ModelConfig):
    """The keys of the layers every Transformer-style model shares."""

    embed_dim: int = Field(512, gt=0, description="model width d (embeddings, attention, residual stream)")
    ffn_dim: int = Field(2048, gt=0, description="inner size of the position-wise feed-forward layer")
    heads: int = Field(8, gt=0, description="attention heads (each of size embed_dim / heads)")
    norm_first: bool = Field(False, description="pre-norm (LayerNorm before each sub-layer, one after each "
                                               "stack); false: post-norm, the paper's")
    activation: Literal["relu", "gelu"] = Field("relu", description="feed-forward activation")
    dropout: float = Field(0.1, ge=0, lt=1, description="on embedding sums and every sub-layer output")
    attention_dropout: float = Field(0.0, ge=0, lt=1, description="on attention weights")
    activation_dropout: float = Field(0.0, ge=0, lt=1, description="after the feed-forward activation")
    tie_embeddings: bool = Field(True, description="output projection = (decoder) input embedding")

    @model_validator(mode="after")
    def _heads_fit(self) -> TransformerLayersConfig:
        if self.embed_dim % self.heads or self.embed_dim % 2:
            raise ValueError(f"embed_dim {self.embed_dim} must be even and divisible by heads {self.heads}")
        return self


class AbsolutePositionsConfig(TransformerLayersConfig):
    """The Transformer's own models: absolute positions added to the embeddings."""

    positions: Literal["sinusoidal", "learned"] = Field("sinusoidal", description="position embeddings")
    max_positions: int = Field(1024, gt=0, description="learned positions: table size (longest sequence)")


class TransformerConfig(AbsolutePositionsConfig):
    arch: Literal["transformer"] = "transformer"
    tasks: ClassVar = ("translation",)
    has_attention: ClassVar = True
    encoder_layers: int = Field(6, ge=1, description="encoder layers (self-attention, FFN)")
    decoder_layers: int = Field(6, ge=1, description="decoder layers (causal self-attention, cross-attention, FFN)")
    share_embeddings: bool = Field(False, description="encoder and decoder share word embeddings (joint vocab)")
    attention_layer: int = Field(-1, description="decoder layer whose cross-attention (mean over heads) "
                                                 "search sees (coverage penalty); -1: the last")

    @model_validator(mode="after")
    def _attention_layer_exists(self) -> TransformerConfig:
        if not -self.decoder_layers <= self.attention_layer < self.decoder_layers:
            raise ValueError(f"attention_layer {self.attention_layer} is not one of the "
                             f"{self.decoder_layers} decoder layers")
        return self

    def recipe_problems(self, recipe) -> list[str]:
        return position_problems(recipe, self.max_positions) if self.positions == "learned" else []


class TransformerLMConfig(AbsolutePositionsConfig):
    arch: Literal["transformer_lm"] = "transformer_lm"
    tasks: ClassVar = ("lm",)
    layers: int = Field(6, ge=1, description="layers (causal self-attention, FFN)")

    def recipe_problems(self, recipe) -> list[str]:
        if self.positions == "learned" and recipe.data.block_len > self.max_positions:
            return [f"data.block_len {recipe.data.block_len} exceeds model.max_positions {self.max_positions}"]
        return []


@dataclass
class Encoded(Rows):
    """The encoder output's cross-attention keys and values, kept once per source sentence even when
    search gives a sentence K decoder rows (beam search's reorder repeats each row K times): the K rows'
    queries then attend together, one (K, S) attention per sentence and head instead of K of (1, S),
    and nothing is copied K times. `rows` (N,) maps each decoder row to its stored row and is always
    [0]*g + [1]*g + ..., so decoder row j reads stored row j // g, g = N / B."""

    mask: torch.Tensor  # (B, S) True on real tokens
    keys: tuple  # per decoder layer, (B, h, S, d_k) cross-attention keys of the encoder output
    values: tuple  # per decoder layer, (B, h, S, d_k)
    rows: torch.Tensor  # (N,) the stored row of each decoder row

    def reorder(self, index: torch.Tensor) -> Encoded:
        rows = self.rows.index_select(0, index)
        kept, counts = rows.unique_consecutive(return_counts=True)
        if kept.unique().numel() < kept.numel() or counts.unique().numel() > 1:  # not groups of one size
            kept, counts = rows, torch.ones_like(rows)
        group = int(counts[0]) if counts.numel() else 1
        keys, values = (tuple(x.index_select(0, kept) for x in xs) for xs in (self.keys, self.values))
        return Encoded(self.mask.index_select(0, kept), keys, values,
                       torch.arange(kept.numel(), device=rows.device).repeat_interleave(group))


@dataclass
class DecoderState(Rows):
    keys: tuple  # per decoder layer, (N, h, t, d_k) self-attention keys of the t tokens so far
    values: tuple  # per decoder layer, (N, h, t, d_k)
    position: torch.Tensor  # (N,) position of the next target token


def _embedding(count: int, dim: int, padding_idx: int | None = PAD) -> nn.Embedding:
    embed = nn.Embedding(count, dim, padding_idx=padding_idx)
    nn.init.normal_(embed.weight, 0.0, dim**-0.5)
    if padding_idx is not None:
        nn.init.zeros_(embed.weight[padding_idx])
    return embed


class Embedding(nn.Module):
    """Dropout(sqrt(d) E[w] + P[pos]); `words` given to share a table. A config without absolute positions
    (not an AbsolutePositionsConfig) gets no P: its attention places the tokens (relative biases)."""

    def __init__(self, vocab: int, cfg: TransformerLayersConfig, words: nn.Embedding | None = None):
        super().__init__()
        self.dim, self.scale = cfg.embed_dim, math.sqrt(cfg.embed_dim)
        self.words = words if words is not None else _embedding(vocab, cfg.embed_dim)
        self.positions = cfg.positions if isinstance(cfg, AbsolutePositionsConfig) else None
        self.table = _embedding(cfg.max_positions, cfg.embed_dim, None) if self.positions == "learned" else None
        self.drop = Dropout(cfg.dropout)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T), positions (B, T) or (1, T) (None without absolute positions) -> (B, T, d)."""
        x = self.words(tokens) * self.scale
        if self.positions is not None:
            x = x + (self.table(positions) if self.table is not None else sinusoids(positions, self.dim))
        return self.drop(x)


class MultiHeadAttention(nn.Module):
    """Query, key/value and output projections around scaled dot-product attention. Without `keys`
    the module has no key/value projection: it attends with another module's keys and values (the
    Block-Recurrent Transformer shares them between its directions)."""

    def __init__(self, dim: int, heads: int, dropout: float, keys: bool = True):
        super().__init__()
        self.heads, self.p = heads, dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim) if keys else None
        self.output = nn.Linear(dim, dim)
        projections = (self.query.weight, *(self.key_value.weight.chunk(2) if keys else ()))
        for weight in projections:
            nn.init.xavier_uniform_(weight, gain=2**-0.5)
        nn.init.xavier_uniform_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, h, T, d_k)."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return self._split(self.query(x))

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.key_value(x).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, q, k, v, mask: torch.Tensor | None = None, *, causal: bool = False,
                bias: torch.Tensor | None = None, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """q (B, h, T, d_k), k and v (B, h, S, d_k), mask (B, S) True on keys to attend to, or instead
        bias, added to the scores and broadcastable to (B, h, T, S) (-inf on keys not to attend to) ->
        output (B, T, d) and, with need_weights, the attention (B, T, S) averaged over heads."""
        p = self.p if self.training else 0.0
        if bias is not None:
            mask = bias.to(q.dtype)
        elif mask is not None:
            mask = mask[:, None, None, :]
        if need_weights:
            # SDPA does not return its weights: the one layer search reads is computed in the open
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.size(-1))
            if mask is not None:
                scores = scores + mask if mask.is_floating_point() else scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores.float(), dim=-1).to(v.dtype)
            out, mean = F.dropout(weights, p, self.training) @ v, weights.mean(1)
        else:
            out, mean = F.scaled_dot_product_attention(q, k, v, mask, dropout_p=p, is_causal=causal), None
        return self.output(out.transpose(1, 2).flatten(2)), mean


class FeedForward(nn.Module):
    def __init__(self, cfg: TransformerLayersConfig):
        super().__init__()
        self.inner = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.outer = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.act = nn.ReLU() if cfg.activation == "relu" else nn.GELU()
        self.drop = Dropout(cfg.activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.drop(self.act(self.inner(x))))


class Layer(nn.Module):
    """An encoder layer (self-attention, FFN), a decoder layer (causal self-attention, cross-attention,
    FFN) or an LM layer (causal self-attention, FFN), each sub-layer wrapped pre- or post-norm."""

    def __init__(self, cfg: TransformerLayersConfig, cross: bool):
        super().__init__()
        d = cfg.embed_dim
        self.norm_first = cfg.norm_first
        self.self_attn = MultiHeadAttention(d, cfg.heads, cfg.attention_dropout)
        self.cross_attn = MultiHeadAttention(d, cfg.heads, cfg.attention_dropout) if cross else None
        self.ffn = FeedForward(cfg)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(3 if cross else 2))
        self.drop = Dropout(cfg.dropout)

    def _in(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.norms[i](x) if self.norm_first else x

    def _add(self, i: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(y)
        return x if self.norm_first else self.norms[i](x)

    def forward(self, x: torch.Tensor, *, mask=None, causal: bool = False, past: tuple | None = None,
                memory: tuple | None = None, need_weights: bool = False):
        """x (B, T, d). mask (B, T) for an encoder's self-attention; causal for a decoder's over all of x;
        past, the (keys, values) of earlier positions when stepping; memory, (keys, values, mask) of the
        encoder output for cross-attention, B / g rows (each serving g consecutive rows of x).
        -> output (B, T, d), this call's self-attention (keys, values) with the past's prepended,
        cross-attention weights (B, T, S) or None."""
        h = self._in(0, x)
        k, v = self.self_attn.keys_values(h)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        x = self._add(0, x, self.self_attn(self.self_attn.queries(h), k, v, mask, causal=causal)[0])
        weights = None
        if self.cross_attn is not None:
            q = self.cross_attn.queries(self._in(1, x))  # (N, h, T, d_k), N = g B rows for B memory rows
            q = q.unflatten(0, (memory[0].size(0), -1)).transpose(1, 2).flatten(2, 3)  # (B, h, g T, d_k)
            y, weights = self.cross_attn(q, *memory, need_weights=need_weights)
            x = self._add(1, x, y.reshape(x.shape))
            weights = None if weights is None else weights.reshape(*x.shape[:2], -1)
        return self._add(-1, x, self.ffn(self._in(-1, x))), (k, v), weights


class Stack(nn.Module):
    """Layers and, pre-norm, the final LayerNorm of their output."""

    def __init__(self, cfg: TransformerLayersConfig, count: int, cross: bool):
        super().__init__()
        self.layers = nn.ModuleList(Layer(cfg, cross) for _ in range(count))
        self.norm = nn.LayerNorm(cfg.embed_dim) if cfg.norm_first else nn.Identity()


def _positions(tokens: torch.Tensor) -> torch.Tensor:
    return torch.arange(tokens.size(1), device=tokens.device).unsqueeze(0)


class Transformer(Seq2SeqModel):
    def __init__(self, cfg: TransformerConfig, sizes: VocabSizes):
        super().__init__()
        self.attention_layer = cfg.attention_layer % cfg.decoder_layers
        self.src_embed = Embedding(sizes.src, cfg)
        self.tgt_embed = Embedding(sizes.tgt, cfg, self.src_embed.words if cfg.share_embeddings else None)
        self.encoder = Stack(cfg, cfg.encoder_layers, cross=False)
        self.decoder = Stack(cfg, cfg.decoder_layers, cross=True)
        self.out = _output(cfg, sizes.tgt, self.tgt_embed.words)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Encoded:
        x = self.src_embed(src, _positions(src))
        for layer in self.encoder.layers:
            x = layer(x, mask=src_mask)[0]
        memory = self.encoder.norm(x)
        keys, values = zip(*(layer.cross_attn.keys_values(memory) for layer in self.decoder.layers))
        return Encoded(src_mask, keys, values, torch.arange(src.size(0), device=src.device))

    def _decode(self, tokens: torch.Tensor, positions: torch.Tensor, enc: Encoded, state: DecoderState | None):
        """tokens, positions (B, T) -> features (B, T, d), cross-attention of `attention_layer` when
        stepping (state given) and the layers' self-attention (keys, values)."""
        x, attn, cache = self.tgt_embed(tokens, positions), None, []
        for i, layer in enumerate(self.decoder.layers):
            past = None if state is None else (state.keys[i], state.values[i])
            x, kv, weights = layer(x, causal=state is None, past=past,
                                   memory=(enc.keys[i], enc.values[i], enc.mask),
                                   need_weights=state is not None and i == self.attention_layer)
            attn = weights if weights is not None else attn
            cache.append(kv)
        return self.decoder.norm(x), attn, cache

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self._decode(tgt_in, _positions(tgt_in), self.encode(src, src_mask), None)[0]

    def start(self, enc: Encoded) -> DecoderState:
        N, (_, heads, _, d_k) = enc.rows.numel(), enc.keys[0].shape
        empty = tuple(k.new_empty(N, heads, 0, d_k) for k in enc.keys)
        return DecoderState(empty, empty, torch.zeros(N, dtype=torch.long, device=enc.mask.device))

    def step(self, prev: torch.Tensor, state: DecoderState, enc: Encoded) -> StepOut:
        features, attn, cache = self._decode(prev.unsqueeze(1), state.position.unsqueeze(1), enc, state)
        log_probs = torch.log_softmax(self.out(features[:, 0]).float(), dim=-1)
        keys, values = zip(*cache)
        return StepOut(log_probs, attn[:, 0], DecoderState(keys, values, state.position + 1))


class TransformerLM(LanguageModel):
    def __init__(self, cfg: TransformerLMConfig, vocab: int):
        super().__init__()
        self.embed = Embedding(vocab, cfg)
        self.stack = Stack(cfg, cfg.layers, cross=False)
        self.out = _output(cfg, vocab, self.embed.words)

    def forward(self, inputs: torch.Tensor, state=None) -> tuple[torch.Tensor, None]:
        """inputs (B, T) -> features (B, T, d); the carried state is ignored (module docstring)."""
        x = self.embed(inputs, _positions(inputs))
        for layer in self.stack.layers:
            x = layer(x, causal=True)[0]
        return self.stack.norm(x), None


def _output(cfg: TransformerLayersConfig, vocab: int, words: nn.Embedding) -> nn.Linear:
    """The vocabulary projection, without bias as in fairseq; tied: the embedding's table itself."""
    out = nn.Linear(cfg.embed_dim, vocab, bias=False)
    if cfg.tie_embeddings:
        out.weight = words.weight
    else:
        nn.init.normal_(out.weight, 0.0, cfg.embed_dim**-0.5)
    return out


@MODELS.register("transformer", config=TransformerConfig)
def build_transformer(cfg: TransformerConfig, sizes: VocabSizes) -> Transformer:
    return Transformer(cfg, sizes)


@MODELS.register("transformer_lm", config=TransformerLMConfig)
def build_transformer_lm(cfg: TransformerLMConfig, sizes: VocabSizes) -> TransformerLM:
    return TransformerLM(cfg, sizes.tgt)
