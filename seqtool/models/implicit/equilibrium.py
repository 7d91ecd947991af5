"""The equilibrium z* = f(z*) as a differentiable function of f's inputs and parameters, by implicit
differentiation (Bai, Kolter and Koltun 2019, Theorem 1), keeping no graph of the solver's iterations.

Forward: z* from a root solver without autograd, then one evaluation y = f(z*) with autograd (y = z*
at the fixed point; it is what links z* to the parameters and the input x).
Backward: for the incoming gradient v = dl/dy, the gradient through the equilibrium is
    dl/dtheta = u^T df(z*)/dtheta,   u^T = v^T (I - J_f(z*))^-1,   i.e.   u = J_f(z*)^T u + v,
a linear fixed point of vector-Jacobian products, solved by the same solvers; u then flows through
y's own graph to theta and x. Memory is one evaluation of f whatever the number of iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from seqtool.models.implicit.solvers import Function, Solution, SolverName, solve

Record = Callable[[str, Solution], None]


@dataclass(frozen=True)
class SolverSettings:
    name: SolverName
    tolerance: float
    max_iterations: int
    history: int

    def solve(self, f: Function, z0: torch.Tensor) -> Solution:
        return solve(self.name, f, z0, tolerance=self.tolerance, max_iterations=self.max_iterations,
                     history=self.history)


class _ImplicitGradient(torch.autograd.Function):
    """Identity in the forward pass; in the backward pass it turns dl/dy into u = J^T u + dl/dy."""

    @staticmethod
    def forward(ctx, y, vjp, settings: SolverSettings, record: Record):
        ctx.vjp, ctx.settings, ctx.record = vjp, settings, record
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        found = ctx.settings.solve(lambda u: ctx.vjp(u) + grad, torch.zeros_like(grad))
        ctx.record("backward", found)
        return found.fz, None, None, None


def equilibrium(f: Function, z0: torch.Tensor, forward: SolverSettings, backward: SolverSettings,
                record: Record) -> torch.Tensor:
    """f's fixed point from z0. `record("forward", solution)` sees the forward solve and, when gradients
    are enabled, `record("backward", solution)` the backward one, in the backward pass."""
    found = forward.solve(f, z0)
    record("forward", found)
    if not torch.is_grad_enabled():
        return found.fz
    z = found.z.detach().requires_grad_()
    y = f(z)

    def vjp(u: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(y, z, u, retain_graph=True)[0]

    return _ImplicitGradient.apply(y, vjp, backward, record)
