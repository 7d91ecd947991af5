"""State-regularized RNNs (Wang and Niepert, "State-Regularized Recurrent Neural Networks", ICML 2019).

A base cell proposes u_t = cell(x_t, h_{t-1}); the state is then pulled to a mixture of k learnable
centroids S = [s_1 .. s_k] (rows of `centroids`):
    alpha_t = softmax(u_t S^T / tau),   h_t = sum_i alpha_{t,i} s_i
(dot-product logits with a temperature, as in the official code). The temperature may be annealed
geometrically, tau_n = tau_0 (tau_final / tau_0)^min(n / N, 1) after n training batches (the card's
check anneals 1 -> 0.1): a soft mixture trained at tau = 1 fits the training strings with states
between the centroids, which the hard snap of evaluation then loses. `straight_through` trains the
snapped network itself: the forward pass takes alpha_t = onehot(argmax), the backward pass the soft
alpha_t's gradient (Bengio et al. 2013's straight-through estimator; not in the SR-RNN paper, but on
Tomita 4 it is what makes the snapped network exact). With `hard_eval` the evaluation
mode takes alpha_t = onehot(argmax): the state is then always one of k centroids and an SR-GRU, whose
only memory is h, is a deterministic finite automaton that seqtool/evaluation/automaton.py reads off
exactly (through rnn_sequence's FiniteStateModel contract). SR-LSTM regularizes h and leaves the
memory cell c free. Init (official code): centroids ~ U(-0.5, 0.5), orthogonal recurrent weights (per
gate block).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from seqtool.models.components import ComponentConfig
from seqtool.models.recurrent.cells import CELLS, CellConfig, CellLayer, GRUCell, LSTMCell, norm_config


class SRConfig(CellConfig):
    takes_norm: ClassVar = False
    centroids: int = Field(10, ge=2, description="k, the learnable states")
    temperature: float = Field(1.0, gt=0, description="tau of the softmax over centroids (-> 0: hard)")
    final_temperature: float | None = Field(
        None, gt=0, description="anneal tau geometrically to this over anneal_steps training batches (null: constant)")
    anneal_steps: int = Field(1000, ge=1, description="training batches over which tau reaches final_temperature")
    straight_through: bool = Field(
        False, description="train the hard snap itself, with the soft mixture's gradient (straight-through)")
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
        self.cfg, self.hard_eval = cfg, cfg.hard_eval
        self.register_buffer("batches", torch.tensor(0))  # in checkpoints, so a resumed anneal continues exactly

    @property
    def temperature(self) -> float:
        final = self.cfg.final_temperature
        if final is None:
            return self.cfg.temperature
        progress = min(int(self.batches) / self.cfg.anneal_steps, 1.0)
        return self.cfg.temperature * (final / self.cfg.temperature) ** progress

    def project(self, x, t0, memories, mask):
        if self.training and t0 == 0:
            self.batches += 1
        self._tau = self.temperature  # once per call: reading the counter in every time step would sync a GPU
        return self.base.project(x, t0, memories, mask)

    def step(self, xw, core, t, memories, mask):
        proposal, core, memories = self.base.step(xw, core, t, memories, mask)
        logits = proposal @ self.centroids.t() / self._tau  # (B, k)
        if self.hard_eval and not self.training:
            h = self.centroids[logits.argmax(-1)]
        else:
            alpha = torch.softmax(logits, dim=-1)
            if self.cfg.straight_through:
                alpha = alpha + (nn.functional.one_hot(logits.argmax(-1), alpha.size(-1)) - alpha).detach()
            h = alpha @ self.centroids
        return h, [h, *core[1:]], memories

    @property
    def finite(self) -> bool:
        """Whether evaluation mode is a finite automaton: a GRU's only memory is h, snapped to a centroid
        (an SR-LSTM's memory cell is not finite)."""
        return self.core == 1 and self.hard_eval

    def assign(self, h: torch.Tensor) -> torch.Tensor:
        """The centroid index of each state (..., H) -> (...): the nearest centroid."""
        return torch.cdist(h.reshape(-1, h.size(-1)), self.centroids).argmin(-1).view(h.shape[:-1])


@CELLS.register("sr_gru", config=SRConfig)
def build_sr_gru(cfg: SRConfig, norm: ComponentConfig, input_dim: int, hidden_dim: int) -> StateRegularizedCell:
    return StateRegularizedCell(cfg, GRUCell, input_dim, hidden_dim)


@CELLS.register("sr_lstm", config=SRConfig)
def build_sr_lstm(cfg: SRConfig, norm: ComponentConfig, input_dim: int, hidden_dim: int) -> StateRegularizedCell:
    return StateRegularizedCell(cfg, LSTMCell, input_dim, hidden_dim)
