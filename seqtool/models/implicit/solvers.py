"""Root solvers for z = f(z): Anderson acceleration and Broyden's method, batched over rows.

Both work on g(z) = f(z) - z for a batch z of shape (N, ...), each row solved on its own (its own
mixing weights or Jacobian estimate), and stop when the relative residual over the whole batch,
    r = ||f(z) - z|| / ||f(z)||,
falls below `tolerance` or after `max_iterations` evaluations of f; they return the iterate with the
lowest r seen (as the DEQ authors' solvers do), its f(z), the evaluations made and r.

Anderson (type II, Walker and Ni 2011), keeping the last m = `history` iterates x_i and f_i = f(x_i):
    G = [f_i - x_i],  alpha = argmin ||G^T alpha||^2 + lam' ||alpha||^2  s.t.  sum(alpha) = 1
      = H^-1 1 / (1^T H^-1 1),  H = G G^T + lam' I,  lam' = lam max_i ||f_i - x_i||^2
    x_next = sum_i alpha_i f_i
Broyden ("good" Broyden, Broyden 1965), on an estimate of the inverse Jacobian of g kept as a sum of
rank-one terms, B^-1 = -I + sum_i u_i v_i^T, one term per iteration (as the authors' solver; dropping
the oldest terms to bound memory made it converge far worse on the DEQ block):
    dx = -B^-1 g(x),  x' = x + dx,  dg = g(x') - g(x)
    v = B^-T dx,  u = (dx - B^-1 dg) / (v^T dg)
Working memory: Anderson keeps 2 history copies of z, Broyden 2 max_iterations copies; neither keeps
an autograd graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch

Function = Callable[[torch.Tensor], torch.Tensor]
SolverName = Literal["anderson", "broyden"]


class Solution(NamedTuple):
    z: torch.Tensor  # the iterate with the lowest relative residual
    fz: torch.Tensor  # f(z)
    iterations: int  # evaluations of f
    residual: float  # ||f(z) - z|| / ||f(z)|| over the batch


def relative_residual(fx: torch.Tensor, x: torch.Tensor) -> float:
    """||f(x) - x|| / ||f(x)|| over the batch."""
    return float((fx - x).norm() / (fx.norm() + 1e-12))


class _Best:
    """The iterate with the lowest relative residual so far."""

    def __init__(self):
        self.solution: Solution | None = None

    def offer(self, x: torch.Tensor, fx: torch.Tensor, iterations: int) -> float:
        residual = relative_residual(fx, x)
        if self.solution is None or residual < self.solution.residual:
            self.solution = Solution(x, fx, iterations, residual)
        return residual

    def result(self, iterations: int, shape: torch.Size) -> Solution:
        """The best iterate and its f in the solver's input shape, after `iterations` evaluations."""
        best = self.solution
        return Solution(best.z.view(shape), best.fz.view(shape), iterations, best.residual)


def anderson(f: Function, z0: torch.Tensor, *, tolerance: float, max_iterations: int, history: int = 5,
             lam: float = 1e-4) -> Solution:
    rows, shape = z0.size(0), z0.shape
    xs = z0.new_zeros(rows, history, z0[0].numel())
    fs = torch.zeros_like(xs)
    best, x = _Best(), z0.reshape(rows, -1)
    for k in range(max_iterations):
        fx = f(x.view(shape)).reshape(rows, -1).to(xs.dtype)
        slot = k % history
        xs[:, slot], fs[:, slot] = x, fx
        if best.offer(x, fx, k + 1) < tolerance:
            break
        n = min(k + 1, history)
        g = fs[:, :n] - xs[:, :n]
        h = g @ g.transpose(1, 2)
        # the ridge scales with the residuals, so it neither vanishes early nor swamps H near convergence
        h = h + lam * h.diagonal(dim1=1, dim2=2).amax(1)[:, None, None] * torch.eye(n, dtype=g.dtype, device=g.device)
        alpha = torch.linalg.solve(h, g.new_ones(rows, n, 1))
        alpha = alpha / alpha.sum(1, keepdim=True)
        x = (alpha.transpose(1, 2) @ fs[:, :n]).squeeze(1)
    return best.result(k + 1, shape)


def broyden(f: Function, z0: torch.Tensor, *, tolerance: float, max_iterations: int) -> Solution:
    rows, shape = z0.size(0), z0.shape
    us = z0.new_zeros(rows, max_iterations, z0[0].numel())
    vs = torch.zeros_like(us)

    def inverse(y: torch.Tensor, terms: int, transpose: bool = False) -> torch.Tensor:
        """B^-1 y (or B^-T y) for rows y (N, D), with the first `terms` rank-one updates."""
        left, right = (vs[:, :terms], us[:, :terms]) if transpose else (us[:, :terms], vs[:, :terms])
        return -y + (left.transpose(1, 2) @ (right @ y.unsqueeze(2))).squeeze(2)

    def residual_of(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fx = f(x.view(shape)).reshape(rows, -1).to(us.dtype)
        return fx, fx - x

    best, x = _Best(), z0.reshape(rows, -1)
    fx, g = residual_of(x)
    for k in range(1, max_iterations + 1):
        if best.offer(x, fx, k) < tolerance or k == max_iterations:
            break
        dx = -inverse(g, k - 1)
        x = x + dx
        fx, g_next = residual_of(x)
        dg, g = g_next - g, g_next
        v = inverse(dx, k - 1, transpose=True)
        denominator = (v * dg).sum(1, keepdim=True)
        # a step that did not change g (a converged row) leaves the estimate as it was
        safe = denominator.abs() > 1e-30
        u = torch.where(safe, (dx - inverse(dg, k - 1)) / torch.where(safe, denominator, 1.0), 0.0)
        us[:, k - 1], vs[:, k - 1] = u, torch.where(safe, v, 0.0)
    return best.result(k, shape)


def solve(name: SolverName, f: Function, z0: torch.Tensor, *, tolerance: float, max_iterations: int,
          history: int) -> Solution:
    """z with f(z) = z from z0 by the named solver (no autograd graph is kept); `history` is Anderson's."""
    with torch.no_grad():
        if name == "anderson":
            return anderson(f, z0, tolerance=tolerance, max_iterations=max_iterations, history=history)
        return broyden(f, z0, tolerance=tolerance, max_iterations=max_iterations)
