"""Neumann-Cayley orthogonal GRU (Mucllari, Zadorozhnyy, Pospisil, Nguyen and Ye, "Orthogonal Gated
Recurrent Unit with Neumann-Cayley Transformation", Neural Computation 2024; arXiv 2208.06496).

Cell (the official PyTorch char-PTB form):
    r = sigma(W_r x + U_r h + b_r);  u = sigma(W_u x + U_u h + b_u)
    z = W_c x + r * (U_c h);  c = modReLU(z) = sign(z) * ReLU(|z| + b_c);  h' = u * h + (1 - u) * c
U_c is kept orthogonal by the scaled Cayley transform U_c = (I + A)^{-1} (I - A) D, A skew-symmetric and
trained, D = diag(+-1) with rho entries -1 (Helfrich et al. 2018, scoRNN). Training follows scoRNN:
    G = dL/dU_c,  V = ((I + A)^{-1})^T G (D + U_c^T),  dL/dA = V^T - V   (skew-symmetric)
and the optimizer steps A like any parameter (Adam keeps a skew-symmetric A skew-symmetric: its update is
elementwise in an antisymmetric gradient). The inverse is not recomputed after each step: with
B = (I + A_k)^{-1} and Delta = A_{k+1} - A_k, the Neumann series to second order gives
    (I + A_{k+1})^{-1} ~ (I - B Delta + (B Delta)^2) B
and every `refresh_every` updates (official code: 49) B is recomputed exactly. The official code uses
-lr * grad as Delta; here Delta is the step the optimizer actually took, read at the next forward pass,
which keeps U_c orthogonal to ~1e-6 instead of drifting with Adam's rescaling.
Init (scoRNN): A block-diagonal with 2x2 blocks of off-diagonal -sqrt((1 - cos t) / (1 + cos t)),
t ~ U(0, pi/2); W_c ~ U(-0.01, 0.01); gate weights U(-1/sqrt(H), 1/sqrt(H)); b_c = 0.
Only U_c is orthogonal here ("NC-GRU(U_c)"); the (U_c, U_r) variant is not built.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from seqtool.models.components import ComponentConfig
from seqtool.models.recurrent.cells import CELLS, CellConfig, CellLayer


class NCGRUConfig(CellConfig):
    takes_norm: ClassVar = False
    negative_fraction: float = Field(0.42, ge=0, le=1, description="share of -1 entries in D (paper: rho = 50 "
                                     "of 118 units for denoise)")
    refresh_every: int = Field(49, ge=1, description="recompute (I + A)^{-1} exactly every N updates of A "
                               "(Neumann approximation in between; official code: 49)")


class _Cayley(torch.autograd.Function):
    """Returns the maintained U_c; the backward pass maps dL/dU_c to scoRNN's skew-symmetric dL/dA."""

    @staticmethod
    def forward(ctx, A, U, inverse, signs):
        ctx.save_for_backward(U, inverse, signs)
        return U.clone()

    @staticmethod
    def backward(ctx, G):
        U, inverse, signs = ctx.saved_tensors
        V = inverse.t() @ G @ (torch.diag(signs) + U.t())
        return V.t() - V, None, None, None


def scornn_init(hidden: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """scoRNN's skew-symmetric A: 2x2 blocks [[0, s], [-s, 0]], s = -sqrt((1 - cos t) / (1 + cos t))."""
    A = torch.zeros(hidden, hidden)
    theta = torch.rand(hidden // 2, generator=generator) * (math.pi / 2)
    s = -torch.sqrt((1 - torch.cos(theta)) / (1 + torch.cos(theta)))
    index = torch.arange(0, 2 * (hidden // 2), 2)
    A[index, index + 1] = s
    A[index + 1, index] = -s
    return A


class NCGRUCell(CellLayer):
    keeps_init = True

    def __init__(self, cfg: NCGRUConfig, input_dim: int, hidden_dim: int):
        super().__init__(input_dim, hidden_dim)
        H = hidden_dim
        bound = 1 / math.sqrt(H)
        self.weight_ih = nn.Parameter(torch.cat([torch.empty(2 * H, input_dim).uniform_(-bound, bound),
                                                 torch.empty(H, input_dim).uniform_(-0.01, 0.01)]))
        self.weight_hh = nn.Parameter(torch.empty(2 * H, H).uniform_(-bound, bound))  # U_r, U_u
        self.bias = nn.Parameter(torch.zeros(2 * H))  # b_r, b_u
        self.modrelu_bias = nn.Parameter(torch.zeros(H))  # b_c
        self.A = nn.Parameter(scornn_init(H))
        signs = torch.ones(H)
        signs[: round(cfg.negative_fraction * H)] = -1.0
        self.register_buffer("signs", signs)  # the diagonal of D
        self.refresh_every = cfg.refresh_every
        eye = torch.eye(H)
        inverse = torch.linalg.inv(eye + self.A.detach())
        self.register_buffer("inverse", inverse)  # B = (I + A)^{-1}, Neumann-updated
        self.register_buffer("U", inverse @ (eye - self.A.detach()) * signs)
        self.register_buffer("A_seen", self.A.detach().clone())  # the A that `inverse` belongs to
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def refresh(self) -> None:
        """Bring B and U_c up to the current A (after an optimizer step)."""
        if torch.equal(self.A, self.A_seen):
            return
        eye = torch.eye(self.hidden_dim, device=self.A.device, dtype=self.A.dtype)
        self.updates += 1
        if int(self.updates) % self.refresh_every == 0:
            self.inverse.copy_(torch.linalg.inv(eye + self.A))
        else:
            X = -self.inverse @ (self.A - self.A_seen)
            self.inverse.copy_((eye + X + X @ X) @ self.inverse)
        self.U.copy_(self.inverse @ (eye - self.A) * self.signs)
        self.A_seen.copy_(self.A)

    def orthogonality_error(self) -> float:
        """||U_c^T U_c - I||_F."""
        eye = torch.eye(self.hidden_dim, device=self.U.device)
        return float(torch.linalg.matrix_norm(self.U.t() @ self.U - eye))

    def project(self, x, t0, memories, mask):
        self.refresh()
        # [U_r; U_u; U_c] for this pass (U_c in the graph for dL/dA), carried to the steps beside the
        # (empty) site memories, so that each step multiplies h once
        U = _Cayley.apply(self.A, self.U, self.inverse, self.signs)
        memories = {**memories, "recurrent": torch.cat([self.weight_hh, U]).t()}
        xw = nn.functional.linear(x, self.weight_ih)
        return torch.cat([xw[..., : 2 * self.hidden_dim] + self.bias, xw[..., 2 * self.hidden_dim :]], -1), memories

    def step(self, xw, core, t, memories, mask):
        h, H = core[0], self.hidden_dim
        hw = h @ memories["recurrent"]  # (B, 3H): U_r h, U_u h, U_c h
        r, u = torch.sigmoid(xw[:, : 2 * H] + hw[:, : 2 * H]).chunk(2, 1)
        z = xw[:, 2 * H :] + r * hw[:, 2 * H :]
        c = torch.sign(z) * torch.relu(z.abs() + self.modrelu_bias)
        h = c + u * (h - c)
        return h, [h], memories

    def describe(self) -> dict[str, float]:
        return {"orthogonality_error": self.orthogonality_error()}


@CELLS.register("ncgru", config=NCGRUConfig)
def build_ncgru(cfg: NCGRUConfig, norm: ComponentConfig, input_dim: int, hidden_dim: int) -> NCGRUCell:
    return NCGRUCell(cfg, input_dim, hidden_dim)
