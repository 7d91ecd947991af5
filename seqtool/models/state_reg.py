"""State-regularized RNNs (Wang and Niepert, "State-Regularized Recurrent Neural Networks", ICML 2019).

A base cell proposes u_t = cell(x_t, h_{t-1}); the state is then pulled to a mixture of k learnable
centroids S = [s_1 .. s_k] (rows of `centroids`):
    alpha_t = softmax(u_t S^T / tau),   h_t = sum_i alpha_{t,i} s_i
(dot-product logits with a temperature, as in the official code). With `hard_eval` the evaluation
mode takes alpha_t = onehot(argmax): the state is then always one of k centroids and an SR-GRU, whose
only memory is h, is a deterministic finite automaton that seqtool/evaluation/automaton.py reads off
exactly. SR-LSTM regularizes h and leaves the memory cell c free. Init (official code): centroids
~ U(-0.5, 0.5), orthogonal recurrent weights (per gate block).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from seqtool.models.cells import CELLS, CellConfig, CellLayer, GRUCell, LSTMCell, norm_config
from seqtool.models.components import ComponentConfig


class SRConfig(CellConfig):
    takes_norm: ClassVar = False
    centroids: int = Field(10, ge=2, description="k, the learnable states")
    temperature: float = Field(1.0, gt=0, description="tau of the softmax over centroids (-> 0: hard)")
    hard_eval: bool = Field(True, description="evaluation snaps to the most likely centroid (a finite automaton)")


class StateRegularizedCell(CellLayer):
    keeps_init = True

    def __init__(self, cfg: SRConfig, base: type[GRUCell] | type[LSTMCell], input_dim: int, hidden_dim: int):
        super().__init__(input_dim, hidden_dim)
        self.base = base(norm_config("none"), input_dim, hidden_dim)
        self.core = self.base.core
        for block in self.base.weight_hh.data.split(hidden_dim):
            nn.init.orthogonal_(block)
        self.centroids = nn.Parameter(torch.empty(cfg.centroids, hidden_dim).uniform_(-0.5, 0.5))
        self.temperature, self.hard_eval = cfg.temperature, cfg.hard_eval

    def project(self, x, t0, memories, mask):
        return self.base.project(x, t0, memories, mask)

    def step(self, xw, core, t, memories, mask):
        proposal, core, memories = self.base.step(xw, core, t, memories, mask)
        logits = proposal @ self.centroids.t() / self.temperature  # (B, k)
        if self.hard_eval and not self.training:
            h = self.centroids[logits.argmax(-1)]
        else:
            h = torch.softmax(logits, dim=-1) @ self.centroids
        return h, [h, *core[1:]], memories

    def assign(self, h: torch.Tensor) -> torch.Tensor:
        """The centroid index of each state (..., H) -> (...): the nearest centroid."""
        return torch.cdist(h.reshape(-1, h.size(-1)), self.centroids).argmin(-1).view(h.shape[:-1])


@CELLS.register("sr_gru", config=SRConfig)
def build_sr_gru(cfg: SRConfig, norm: ComponentConfig, input_dim: int, hidden_dim: int) -> StateRegularizedCell:
    return StateRegularizedCell(cfg, GRUCell, input_dim, hidden_dim)


@CELLS.register("sr_lstm", config=SRConfig)
def build_sr_lstm(cfg: SRConfig, norm: ComponentConfig, input_dim: int, hidden_dim: int) -> StateRegularizedCell:
    return StateRegularizedCell(cfg, LSTMCell, input_dim, hidden_dim)
