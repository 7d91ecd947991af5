"""Deep Equilibrium Models (Bai, Kolter and Koltun, NeurIPS 2019, arXiv 1909.01377): `deq_lm`, a
language model whose hidden sequence is the fixed point of one weight-tied Transformer block.

Input injection: x = Dropout(sqrt(d) E[w] + P), P sinusoidal positions, and
    x~ = x W_x + b_x  (3d wide: added to the block's queries, keys and values)
The DEQ-Transformer cell (post-norm, as the authors' code), with causal multi-head attention:
    h = LN(z + Attn(z W_QKV + x~) W_O)
    f(z; x) = LN(h + W_2 ReLU(W_1 h + b_1) + b_2)
The model's features are the equilibrium:
    z* = f(z*; x), found from z^0 = 0 by Anderson acceleration or Broyden's method (solvers.py)
and the loss is differentiated implicitly (Theorem 1; equilibrium.py): for v = dl/dz*,
    dl/dtheta = u^T df(z*; x)/dtheta,   u = (df/dz*)^T u + v
solved by a solver again, so training memory does not grow with the number of iterations.
Output: p(w_t | w_<t) = softmax(W_o Dropout(z*_t)), W_o tied to E (tie_embeddings).

The baseline with equal parameters (`unrolled_layers: L`): the same block stacked L times,
z^{i+1} = f(z^i; x) from z^0 = 0, backpropagated through all L applications (memory O(L)); its reported
residual is ||z^L - z^{L-1}|| / ||z^L||, how far L layers are from the equilibrium.

Where this differs from the paper: positions are absolute sinusoids in the injection rather than
Transformer-XL's relative ones inside the attention, and there is no memory of the previous segment,
so, as `transformer_lm`, each block is scored with the context inside it only and the LM carries no
state between blocks (nothing to resume but the weights). Dropout is applied to the injection's input
and to z* only: a mask inside f would make f a different map at every iteration (the authors fix one
mask per forward pass instead). The solvers treat each sequence as one row (as the authors'): their
mixing weights and Jacobian estimates are computed over all its positions, so an iterate at t depends a
little on later tokens; the exact fixed point of the causal f does not, and the difference is bounded
by the residual (tests/unit/test_deq.py measures it). Solving each position as its own row would be
causal at every iterate, but Anderson then left a residual 20 times larger after 40 iterations of the
untrained block. Initialisation: N(0, 0.05) for the block's and the injection's weights (the paper's),
zero biases, embeddings N(0, d^-1/2).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from seqtool.models.base import LanguageModel, VocabSizes
from seqtool.models.config import ModelConfig
from seqtool.models.implicit.equilibrium import SolverSettings, equilibrium
from seqtool.models.implicit.solvers import Solution, SolverName, relative_residual
from seqtool.models.layers import Dropout, sinusoids
from seqtool.registry import MODELS
from seqtool.specials import PAD


class DEQLMConfig(ModelConfig):
    arch: Literal["deq_lm"] = "deq_lm"
    tasks: ClassVar = ("lm",)
    embed_dim: int = Field(256, gt=0, description="model width d (embeddings, the equilibrium z)")
    ffn_dim: int = Field(1024, gt=0, description="inner size of the block's feed-forward layer")
    heads: int = Field(4, gt=0, description="attention heads (each of size embed_dim / heads)")
    dropout: float = Field(0.1, ge=0, lt=1, description="on the embedding sums and on z* (never inside the block)")
    init_std: float = Field(0.05, gt=0, description="standard deviation of the block's and the injection's "
                                                    "initial weights (the paper's N(0, 0.05))")
    tie_embeddings: bool = Field(True, description="output projection = input embedding")
    unrolled_layers: int | None = Field(None, ge=1, description="the baseline: apply the block this many times "
                                        "from z = 0 and backpropagate through all of them (the same block "
                                        "stacked as layers, equal parameters, memory growing with the "
                                        "count); null: the DEQ, solved for its fixed point")
    solver: SolverName = Field("anderson", description="forward root solver for z* = f(z*; x)")
    backward_solver: SolverName | None = Field(None, description="solver of the backward linear fixed point "
                                               "u = J^T u + dl/dz*; null: the same as solver (the authors "
                                               "use anderson forward, broyden backward)")
    tolerance: float = Field(1e-3, gt=0, description="forward: stop at relative residual "
                                                     "||f(z) - z|| / ||f(z)|| below this")
    max_iterations: int = Field(30, ge=1, description="forward: at most this many evaluations of the block")
    backward_tolerance: float = Field(1e-3, gt=0, description="backward: stop at relative residual below this")
    backward_max_iterations: int = Field(35, ge=1, description="backward: at most this many "
                                                               "vector-Jacobian products")
    history: int = Field(5, ge=1, description="anderson: the past iterates it mixes (its memory; broyden keeps "
                                              "one rank-one update per iteration, as the authors')")

    @model_validator(mode="after")
    def _heads_fit(self) -> DEQLMConfig:
        if self.embed_dim % self.heads or self.embed_dim % 2:
            raise ValueError(f"embed_dim {self.embed_dim} must be even and divisible by heads {self.heads}")
        return self


class Block(nn.Module):
    """f(z; x~): one post-norm Transformer layer whose queries, keys and values receive the injection."""

    def __init__(self, cfg: DEQLMConfig):
        super().__init__()
        d = cfg.embed_dim
        self.heads = cfg.heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d)
        self.inner = nn.Linear(d, cfg.ffn_dim)
        self.outer = nn.Linear(cfg.ffn_dim, d)
        self.norms = nn.ModuleList([nn.LayerNorm(d), nn.LayerNorm(d)])

    def forward(self, z: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        """z (B, T, d), injection (B, T, 3d) -> f(z; x) (B, T, d)."""
        q, k, v = (self.qkv(z) + injection).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(2)
        h = self.norms[0](z + self.attn_out(attended))
        return self.norms[1](h + self.outer(F.relu(self.inner(h))))


class SolverLog:
    """What the solvers did: the latest training step's forward and backward solves, and the mean over
    the forward passes in evaluation mode since the last `evaluation()` (or switch to evaluation)."""

    def __init__(self):
        self.latest: dict[str, float] = {}
        self.sums = [0, 0.0, 0.0]  # forward passes, iterations, residuals

    def __call__(self, kind: str, found: Solution) -> None:
        if kind == "forward" and not torch.is_grad_enabled():
            self.sums = [self.sums[0] + 1, self.sums[1] + found.iterations, self.sums[2] + found.residual]
            return
        if kind == "forward":
            self.latest = {}
        self.latest.update({f"{kind}_iterations": found.iterations, f"{kind}_residual": found.residual})

    def evaluation(self) -> dict[str, float]:
        count, iterations, residuals = self.sums
        self.sums = [0, 0.0, 0.0]
        return {"forward_iterations": iterations / count, "forward_residual": residuals / count} if count else {}


class DEQLM(LanguageModel):
    def __init__(self, cfg: DEQLMConfig, vocab: int):
        super().__init__()
        d = cfg.embed_dim
        self.dim, self.unrolled = d, cfg.unrolled_layers
        self.embed = nn.Embedding(vocab, d, padding_idx=PAD)
        self.inject = nn.Linear(d, 3 * d)
        self.block = Block(cfg)
        self.drop = Dropout(cfg.dropout)
        self.out = nn.Linear(d, vocab, bias=False)
        self._init(cfg)
        self.forward_solver = SolverSettings(cfg.solver, cfg.tolerance, cfg.max_iterations, cfg.history)
        self.backward_solver = SolverSettings(cfg.backward_solver or cfg.solver, cfg.backward_tolerance,
                                              cfg.backward_max_iterations, cfg.history)
        self.log = SolverLog()

    def _init(self, cfg: DEQLMConfig) -> None:
        nn.init.normal_(self.embed.weight, 0.0, self.dim**-0.5)
        nn.init.zeros_(self.embed.weight[PAD])
        for layer in (self.inject, self.block.qkv, self.block.attn_out, self.block.inner, self.block.outer):
            nn.init.normal_(layer.weight, 0.0, cfg.init_std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        if cfg.tie_embeddings:
            self.out.weight = self.embed.weight
        else:
            nn.init.normal_(self.out.weight, 0.0, self.dim**-0.5)

    def forward(self, inputs: torch.Tensor, state=None) -> tuple[torch.Tensor, None]:
        """inputs (B, T) -> features Dropout(z*) (B, T, d); no state is carried (module docstring)."""
        positions = torch.arange(inputs.size(1), device=inputs.device)
        x = self.drop(self.embed(inputs) * math.sqrt(self.dim) + sinusoids(positions, self.dim))
        injection = self.inject(x)
        z0 = torch.zeros_like(x)
        return self.drop(self.fixed_point(lambda z: self.block(z, injection), z0)), None

    def fixed_point(self, f, z0: torch.Tensor) -> torch.Tensor:
        """z* = f(z*) (the DEQ), or f applied `unrolled_layers` times (the stacked baseline)."""
        if self.unrolled is None:
            return equilibrium(f, z0, self.forward_solver, self.backward_solver, self.log)
        z, previous = z0, z0
        for _ in range(self.unrolled):
            z, previous = f(z), z
        with torch.no_grad():
            residual = relative_residual(z, previous)
        self.log("forward", Solution(previous, z, self.unrolled, residual))
        return z

    def train(self, mode: bool = True) -> DEQLM:
        if not mode:
            self.log.evaluation()  # a validation cut short must not leave its passes in the next one's mean
        return super().train(mode)

    def training_report(self) -> dict[str, float]:
        return dict(self.log.latest)

    def validated(self, metrics: dict[str, float]) -> dict[str, float]:
        return self.log.evaluation()


@MODELS.register("deq_lm", config=DEQLMConfig)
def build_deq_lm(cfg: DEQLMConfig, sizes: VocabSizes) -> DEQLM:
    return DEQLM(cfg, sizes.tgt)
