"""The Block-Recurrent Transformer (Hutchins, Schlag, Wu, Dyer and Neyshabur, NeurIPS 2022, arXiv 2203.07852):
language model `block_recurrent`; with `recurrent_layers: []` it is the paper's sliding-window baseline.

Segments (the LM task's blocks of data.block_len tokens) are cut into blocks of W tokens (`window`).
Sliding-window attention (sec. 3): a token attends, causally, to its own block and the whole previous one,
whose keys and values are cached from the previous segment (Transformer-XL style):
    Attn_i = softmax_j(q_i k_j^T / sqrt(d_k) + r_h(i - j)) v_j,   j in blocks b-1 and b, j <= i
with r_h the T5 relative-position bias (Raffel et al. 2020), a learned scalar per head and bucket of
distance (distances below 16 exact, longer ones in log-spaced buckets up to 128; 32 buckets), so blocks
carry no absolute position. Layers are pre-norm Transformer layers (seqtool's `Layer`: attention and FFN,
each with a residual).

A recurrent layer also keeps S state vectors c (`states`) of width d, updated once per block:
    vertical (tokens):  x <- x + Dropout(W_s SelfAttn(LN x) + W_c CrossAttn(LN x -> c_b));  x <- x + FFN
    horizontal (state): c~ = LN(c_b) + e (learned state IDs e);
                        z = W'_s SelfAttn(c~ -> c~) + W'_c CrossAttn(c~ -> tokens of blocks b-1, b)
                        c_{b+1} = gate(c_b, z),  then optionally c <- gate'(c, FFN(LN c)) (`state_ffn`)
(the paper concatenates the two attentions' outputs and projects them: W [a; b] = W_s a + W_c b, the sum
of two output projections). Keys and values are shared between the directions: the tokens' keys and
values serve the tokens' self-attention and the state's cross-attention; the state's serve its
self-attention and the tokens' cross-attention. Block b's tokens read c_b, the state before their own
block, so nothing flows from a token to an earlier one. The gates, in place of a residual:
    fixed: g = sigmoid(b),                                         c' = c * g + z * (1 - g)
    lstm:  f = sigmoid(W_f z + b_f + 1),  i = sigmoid(W_i z + b_i - 1),  c' = c * f + z * i
with biases from N(0, 0.1) and W from a variance-scaling(0.1) normal (meliad's nn_components.MLP; meliad
feeds the LSTM gates the concatenated attention outputs before their projection, here the projection z).
"Rec:fixed:skip", the paper's best, is gate fixed without state_ffn (the defaults). The state starts, at
a document's first block, from a learned c_0 ~ N(0, 0.1); state attention has no dropout (as meliad).

The state carried between the LM task's blocks holds, per layer, the last block's keys and values
(N, h, W, d_k) and, in recurrent layers, c (N, S, d); at a stream's start the cache is zeros (meliad's
start of sequence). A segment whose length is not a multiple of W (a stream's last) is padded at its end;
the padding is in every real token's future, and the state after it is not carried further.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from seqtool.models.attention.transformer import (
    Embedding,
    FeedForward,
    Layer,
    MultiHeadAttention,
    TransformerLayersConfig,
    _output,
)
from seqtool.models.base import LanguageModel, VocabSizes
from seqtool.registry import MODELS
from seqtool.specials import PAD

BUCKETS, MAX_DISTANCE = 32, 128  # T5's (and meliad's) relative-position buckets


class BlockRecurrentConfig(TransformerLayersConfig):
    arch: Literal["block_recurrent"] = "block_recurrent"
    tasks: ClassVar = ("lm",)
    norm_first: bool = Field(True, description="pre-norm (the paper's, as meliad); false: post-norm")
    dropout: float = Field(0.05, ge=0, lt=1, description="on embeddings and every token sub-layer output")
    layers: int = Field(12, ge=1, description="layers (sliding-window attention, FFN)")
    window: int = Field(512, gt=0, description="W, tokens per block: a token attends to its own block "
                        "(causally) and the previous one; data.block_len must be a multiple")
    states: int = Field(512, gt=0, description="S, state vectors of each recurrent layer")
    recurrent_layers: list[int] = Field([-3], description="which layers are recurrent (0-based; negative count "
                                        "from the top: -3 of 12 is the paper's layer 10); []: the sliding-"
                                        "window Transformer")
    gate: Literal["fixed", "lstm"] = Field("fixed", description="the state's gate: fixed c*g + z*(1-g), "
                                           "g = sigmoid(b); lstm c*f + z*i with input and forget gates")
    state_ffn: bool = Field(False, description="a gated feed-forward layer after the state's attention "
                            "(false: the paper's best, 'skip')")

    @model_validator(mode="after")
    def _recurrent_layers_exist(self) -> BlockRecurrentConfig:
        if any(not -self.layers <= i < self.layers for i in self.recurrent_layers):
            raise ValueError(f"recurrent_layers {self.recurrent_layers}: each must be one of the {self.layers} layers")
        if len({i % self.layers for i in self.recurrent_layers}) < len(self.recurrent_layers):
            raise ValueError(f"recurrent_layers {self.recurrent_layers} names a layer twice")
        return self

    def recipe_problems(self, recipe) -> list[str]:
        if recipe.data.block_len % self.window:
            return [f"data.block_len {recipe.data.block_len} must be a multiple of model.window {self.window} "
                    "(segments of whole blocks, so the state is carried exactly)"]
        return []


def t5_bucket(distance: torch.Tensor) -> torch.Tensor:
    """Causal T5 buckets of distances >= 0: the first BUCKETS/2 exact, then log-spaced up to MAX_DISTANCE."""
    exact = BUCKETS // 2
    far = exact + (torch.log(distance.clamp(min=1).float() / exact) / math.log(MAX_DISTANCE / exact)
                   * (BUCKETS - exact)).long()
    return torch.where(distance < exact, distance, far.clamp(max=BUCKETS - 1))


class WindowBias(nn.Module):
    """(h, W, 2W) scores added to one block's attention over [previous block; own block]: the relative
    position bias r_h(i - j), and -inf on keys after the query."""

    def __init__(self, heads: int, window: int):
        super().__init__()
        distance = torch.arange(window).unsqueeze(1) + window - torch.arange(2 * window)
        self.register_buffer("bucket", t5_bucket(distance.clamp(min=0)), persistent=False)
        self.register_buffer("future", distance < 0, persistent=False)
        self.table = nn.Embedding(BUCKETS, heads)
        nn.init.normal_(self.table.weight, 0.0, BUCKETS**-0.5)

    def forward(self) -> torch.Tensor:
        return self.table(self.bucket).permute(2, 0, 1).masked_fill(self.future, float("-inf"))


def windows(cache: torch.Tensor, x: torch.Tensor, window: int) -> torch.Tensor:
    """cache (N, h, W, d_k) of the block before, x (N, h, n*W, d_k) -> (N, h, n, 2W, d_k): each block's
    keys (or values) after those of the block before it."""
    return torch.cat([cache, x], 2).unfold(2, 2 * window, window).transpose(-1, -2)


def fold(x: torch.Tensor) -> torch.Tensor:
    """(N, h, n, L, d_k) -> (N*n, h, L, d_k): blocks as rows, so one attention call serves them all."""
    return x.transpose(1, 2).flatten(0, 1)


def blocks(x: torch.Tensor, window: int) -> torch.Tensor:
    """(N, h, n*W, d_k) -> (N*n, h, W, d_k)."""
    return fold(x.unflatten(2, (-1, window)))


class Gate(nn.Module):
    """c' from the carried c and the update z (module notes: fixed or lstm)."""

    def __init__(self, kind: str, dim: int):
        super().__init__()
        self.kind = kind
        if kind == "fixed":
            self.bias = nn.Parameter(torch.randn(dim) * 0.1)
        else:
            self.forget, self.input = (nn.Linear(dim, dim) for _ in range(2))
            for layer in (self.forget, self.input):
                std = math.sqrt(0.1 / dim)
                nn.init.trunc_normal_(layer.weight, 0.0, std, -2 * std, 2 * std)
                nn.init.normal_(layer.bias, 0.0, 0.1)

    def forward(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "fixed":
            g = torch.sigmoid(self.bias)
            return c * g + z * (1 - g)
        return c * torch.sigmoid(self.forget(z) + 1) + z * torch.sigmoid(self.input(z) - 1)


class WindowLayer(Layer):
    """A pre- (or post-) norm Transformer layer whose self-attention is the sliding window over blocks;
    its carried state is the last block's (keys, values)."""

    def __init__(self, cfg: BlockRecurrentConfig):
        super().__init__(cfg, cross=False)
        self.window = cfg.window
        self.bias = WindowBias(cfg.heads, cfg.window)

    def start(self, rows: int, like: torch.Tensor) -> tuple:
        d_k = like.size(-1) // self.self_attn.heads
        zeros = like.new_zeros(rows, self.self_attn.heads, self.window, d_k)
        return zeros, zeros

    def forward(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """x (N, n*W, d) and the state after the text before it -> (N, n*W, d) and the state after x."""
        h = self._in(0, x)
        k, v = self.self_attn.keys_values(h)
        keys, values = windows(state[0], k, self.window), windows(state[1], v, self.window)
        y = self.self_attn(blocks(self.self_attn.queries(h), self.window), fold(keys), fold(values),
                           bias=self.bias())[0]
        y, carried = self.recur(h, keys, values, state[2:], y)
        x = self._add(0, x, y.view(x.shape))
        x = self._add(-1, x, self.ffn(self._in(-1, x)))
        return x, (k[:, :, -self.window :], v[:, :, -self.window :], *carried)

    def recur(self, h, keys, values, carried: tuple, y: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """A recurrent layer's addition to the self-attention output y (N*n, W, d) and its carried state;
        none here. h (N, n*W, d) is the normed input, keys and values (N, h, n, 2W, d_k) the windows."""
        return y, ()


class RecurrentLayer(WindowLayer):
    """A WindowLayer with S state vectors, read by its tokens and updated once per block."""

    def __init__(self, cfg: BlockRecurrentConfig):
        super().__init__(cfg)
        d, heads = cfg.embed_dim, cfg.heads
        # the tokens' cross-attention; its key/value projection makes the state's keys and values
        self.read = MultiHeadAttention(d, heads, cfg.attention_dropout)
        self.state_self = MultiHeadAttention(d, heads, 0.0, keys=False)
        self.state_cross = MultiHeadAttention(d, heads, 0.0, keys=False)
        self.state_norm = nn.LayerNorm(d)
        self.ids = nn.Parameter(torch.randn(cfg.states, d))
        self.initial = nn.Parameter(torch.randn(cfg.states, d) * 0.1)
        self.gate = Gate(cfg.gate, d)
        self.state_ffn = nn.ModuleDict({"norm": nn.LayerNorm(d), "ffn": FeedForward(cfg), "gate": Gate(cfg.gate, d)}
                                       ) if cfg.state_ffn else None

    def start(self, rows: int, like: torch.Tensor) -> tuple:
        return (*super().start(rows, like), self.initial.expand(rows, -1, -1))

    def update(self, c: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """c (N, S, d), one block's window of token keys and values (N, h, 2W, d_k) -> the next state and
        the state's own (keys, values), which the block's tokens read."""
        normed = self.state_norm(c) + self.ids
        own = self.read.keys_values(normed)
        z = (self.state_self(self.state_self.queries(normed), *own)[0]
             + self.state_cross(self.state_cross.queries(normed), keys, values)[0])
        c = self.gate(c, z)
        if self.state_ffn is not None:
            c = self.state_ffn["gate"](c, self.state_ffn["ffn"](self.state_ffn["norm"](c)))
        return c, own

    def recur(self, h, keys, values, carried: tuple, y: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        (c,) = carried
        read = []
        for b in range(keys.size(2)):
            c, own = self.update(c, keys[:, :, b], values[:, :, b])
            read.append(own)
        state_keys, state_values = (fold(torch.stack(kv, 2)) for kv in zip(*read))  # (N*n, h, S, d_k)
        return y + self.read(blocks(self.read.queries(h), self.window), state_keys, state_values)[0], (c,)


class BlockRecurrentLM(LanguageModel):
    def __init__(self, cfg: BlockRecurrentConfig, vocab: int):
        super().__init__()
        self.window = cfg.window
        recurrent = {i % cfg.layers for i in cfg.recurrent_layers}
        self.layers = nn.ModuleList(RecurrentLayer(cfg) if i in recurrent else WindowLayer(cfg)
                                    for i in range(cfg.layers))
        self.embed = Embedding(vocab, cfg)
        self.norm = nn.LayerNorm(cfg.embed_dim) if cfg.norm_first else nn.Identity()
        self.out = _output(cfg, vocab, self.embed.words)

    def forward(self, inputs: torch.Tensor, state: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        """inputs (N, T) -> features (N, T, d) and, per layer, the state after them (module notes)."""
        length = inputs.size(1)
        x = self.embed(F.pad(inputs, (0, -length % self.window), value=PAD))
        if state is None:
            state = tuple(layer.start(inputs.size(0), x) for layer in self.layers)
        carried = []
        for layer, own in zip(self.layers, state):
            x, own = layer(x, own)
            carried.append(own)
        return self.norm(x)[:, :length], tuple(carried)


@MODELS.register("block_recurrent", config=BlockRecurrentConfig)
def build_block_recurrent(cfg: BlockRecurrentConfig, sizes: VocabSizes) -> BlockRecurrentLM:
    return BlockRecurrentLM(cfg, sizes.tgt)
