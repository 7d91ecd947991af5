"""ARMA cell (Schiele, Berninger and Ruegamer, "ARMA Cell: A Modular and Effective Approach for Neural
Autoregressive Modeling", arXiv 2208.14919, 2022).

For inputs x_t in R^k, p autoregressive and q moving-average lags and m units, each unit u predicts
    y^u_t = sigma( sum_{i=1..p} W^u_i x_{t-i} + sum_{j=1..q} U^u_j y^u_{t-j} + b^u ),   W^u_i, U^u_j in R^{k x k}
and lags j > p use the residual (y^u_{t-j} - x_{t-j}). The layer's output is the m predictions side by
side (hidden_dim = m k). With a linear sigma and one unit this is exactly an ARMA(p, q) predictor:
    x^_t = sum_i (phi_i + theta_i) x_{t-i} - sum_j theta_j x^_{t-j}
so phi_i = W_i + U_i and theta_j = -U_j (`describe`). In seqtool's convention the output at step t
predicts the next input, so the AR lags are x_t .. x_{t-p+1}; the state carries the last q outputs
and the last max(p, q) - 1 inputs. The AR part is computed for all steps at once; only the MA
recursion runs in the time loop.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from seqtool.models.components import ComponentConfig
from seqtool.models.recurrent.cells import CELLS, CellConfig, CellLayer

ACTIVATIONS = {"linear": lambda z: z, "tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}


class ARMAConfig(CellConfig):
    takes_norm: ClassVar = False
    p: int = Field(2, ge=1, description="autoregressive lags of the input")
    q: int = Field(2, ge=0, description="moving-average lags of the cell's own predictions")
    activation: Literal["linear", "tanh", "relu", "sigmoid"] = Field(
        "tanh", description="sigma; linear makes each unit an ARMA(p, q) model")
    bias: bool = Field(True, description="learn b (false: none, as in a zero-mean ARMA process)")


class ARMACell(CellLayer):
    keeps_init = True
    sites = ("lags",)

    def __init__(self, cfg: ARMAConfig, input_dim: int, hidden_dim: int):
        super().__init__(input_dim, hidden_dim)
        if hidden_dim % input_dim:
            raise ValueError(f"the arma cell's hidden size ({hidden_dim}) must be a multiple of its input size "
                             f"({input_dim}): m units of k = input size outputs each")
        m, k = hidden_dim // input_dim, input_dim
        self.p, self.q, self.units = cfg.p, cfg.q, m
        self.input_lags = max(cfg.p, cfg.q) - 1
        self.activation = ACTIVATIONS[cfg.activation]
        self.W = nn.Parameter(torch.empty(m, cfg.p, k, k).uniform_(-0.1, 0.1))
        self.U = nn.Parameter(torch.empty(m, cfg.q, k, k).uniform_(-0.1, 0.1))
        self.b = nn.Parameter(torch.zeros(m, k)) if cfg.bias else None

    def memory(self, site, batch, like):
        k = self.input_dim
        return (like.new_zeros(batch, self.q, self.units, k), like.new_zeros(batch, self.input_lags, k))

    def project(self, x, t0, memories, mask):
        """The input side of every step: sum_i W_i x_{t-i+1} (minus U_j x_{t-j+1} for residual lags j > p)."""
        outputs, past = memories["lags"]
        L, T = self.input_lags, x.size(1)
        xs = torch.cat([past, x], dim=1)  # (B, L + T, k); xs[:, L + t] = x_t

        def lagged(i: int) -> torch.Tensor:  # x_{t-i+1} for every step t: (B, T, k)
            return xs[:, L - (i - 1) : L - (i - 1) + T]

        pre = sum(torch.einsum("btk,mlk->btml", lagged(i), self.W[:, i - 1]) for i in range(1, self.p + 1))
        for j in range(self.p + 1, self.q + 1):
            pre = pre - torch.einsum("btk,mlk->btml", lagged(j), self.U[:, j - 1])
        if self.b is not None:
            pre = pre + self.b
        memories = {**memories, "lags": (outputs, xs[:, xs.size(1) - L :])}
        return pre, memories

    def step(self, pre, core, t, memories, mask):
        outputs, past = memories["lags"]  # outputs (B, q, m, k): y_{t-1} .. y_{t-q}
        if self.q:
            pre = pre + torch.einsum("bjmk,mjlk->bml", outputs, self.U)
        y = self.activation(pre)  # (B, m, k)
        memories["lags"] = (torch.cat([y.unsqueeze(1), outputs[:, : self.q - 1]], dim=1) if self.q else outputs, past)
        h = y.flatten(1)
        return h, [h], memories

    def describe(self) -> dict[str, float]:
        """The ARMA coefficients of a one-unit, one-dimensional cell (phi_i = W_i + U_i, theta_j = -U_j)."""
        if self.units != 1 or self.input_dim != 1:
            return {}
        W, U = self.W[0, :, 0, 0].tolist(), self.U[0, :, 0, 0].tolist()
        ar = {f"ar_{i + 1}": W[i] + (U[i] if i < self.q else 0.0) for i in range(self.p)}
        return {**ar, **{f"ma_{j + 1}": -U[j] for j in range(self.q)}}


@CELLS.register("arma", config=ARMAConfig)
def build_arma(cfg: ARMAConfig, norm: ComponentConfig, input_dim: int, hidden_dim: int) -> ARMACell:
    return ARMACell(cfg, input_dim, hidden_dim)
