"""Deep Learning in Target Space (Fairbank, Samothrakis and Citi, JMLR 23(8), 2022; papers.md card 3): a
tanh RNN whose learnable parameters are not weights but targets, the pre-activation sums each layer should
produce on a fixed "realisation batch" X̄ (n̄ sequences of τ̄ steps, sampled once and kept in the state dict).
Every forward pass solves the weights from the targets by ridge regression, and the gradient of the loss
reaches the targets through the solve.

Dense layer j, targets T_j (n̄, τ̄, n_j), realised input X̄_{j-1}, Ã = [1, X̄_{j-1}] (rows over (sequence, step)):

    W_j  = argmin_W ‖Ã W − T_j‖² + λ‖W‖² = (ÃᵀÃ + λI)⁻¹ ÃᵀT_j  = Ãᵀ(ÃÃᵀ + λI)⁻¹T_j   (the smaller system)
    X̄_j  = f(Ã W_j)          SCU, sequential cascade untangling: the next layer solves against what this
                              layer really produces on X̄ (the paper's default)
        or f(T_j)            OCU, optimistic cascade untangling
    X_j  = f([1, X_{j-1}] W_j)   on the real minibatch; the loss is taken on the top layer's X_L

Recurrent layer (the paper's TSRNNDense), targets T (n̄, τ̄, H): one least-squares problem over every
(sequence, step) pair maps [1, x̄_t, f(T_{t-1})] to T_t, with f(T_0) = 0, so the recurrent input is the
previous step's target (this untangles the cascade through time); the solved [b; W_x; W_h] then runs as an
ordinary tanh RNN, h_t = tanh(b + x_t W_x + h_{t-1} W_h), on X̄ (SCU) and on the minibatch.

Targets start N(0, 1) (truncated at 2σ) and are then projected (section 3.4): T is replaced by the sums the
weights solved from it really produce on X̄, layer by layer. The realisation batch is drawn from the model's
input alphabet: uniform random one-hot symbols (the bit tasks' inputs are i.i.d. uniform bits, so this is a
batch of training-like sequences) or N(0, 1) features (the paper's IMDB model used a fixed noise matrix).
The solve runs in float32 at least, outside autocast.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from seqtool.models.base import SequenceModel, VocabSizes
from seqtool.models.config import ModelConfig
from seqtool.registry import MODELS


class TargetSpaceConfig(ModelConfig):
    arch: Literal["target_space_rnn"] = "target_space_rnn"
    tasks: ClassVar = ("synthetic",)  # music's multi-hot frames fit neither kind of realisation batch below
    hidden_dim: int = Field(33, gt=0, description="tanh units per recurrent layer (the card's delayed recall: "
                            "delay + 3)")
    layers: int = Field(1, ge=1, description="target-space recurrent layers (a target-space dense layer reads out)")
    ridge: float = Field(0.1, gt=0, description="lambda, the L2 penalty of each least-squares solve "
                         "(the paper's pseudoinverse_l2_regularisation)")
    realisation_batch: int = Field(100, gt=0, description="n-bar: sequences in the fixed realisation batch")
    realisation_length: int = Field(50, gt=1, description="tau-bar: steps of each realisation sequence")
    realisation_inputs: Literal["symbols", "gaussian"] = Field(
        "symbols", description="what the realisation batch holds: uniform random one-hot symbols (tasks of "
        "i.i.d. symbols) or N(0,1) features")
    cascade: Literal["scu", "ocu"] = Field("scu", description="scu: each layer solves against the layer below's "
                                           "realised outputs; ocu: against f(targets) below (worse in the paper)")
    target_std: float = Field(1.0, gt=0, description="standard deviation of the initial targets")
    projection: bool = Field(True, description="replace the initial targets by the sums their solved weights "
                             "produce (the paper's section 3.4)")

    def recipe_problems(self, recipe) -> list[str]:
        if recipe.train.quantize is not None:
            return ["train.quantize: a target-space model stores no weights to quantize (they are solved from its "
                    "targets at every step)"]
        return []


def with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.ones_like(x[..., :1]), x], -1)


def ridge_solve(inputs: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    """W (1 + F, O) minimising ‖[1, A] W − T‖² + λ‖W‖² over all rows of inputs (..., F) and targets (..., O),
    by Cholesky on whichever of ÃᵀÃ and ÃÃᵀ is smaller (the same W for λ > 0; as λ → 0 the dual form is
    the minimum-norm exact fit when there are no more rows than columns). Float32 at least, outside autocast."""
    dtype = torch.promote_types(inputs.dtype, torch.float32)
    with torch.autocast(inputs.device.type, enabled=False):
        a = with_bias(inputs.reshape(-1, inputs.shape[-1]).to(dtype))
        t = targets.reshape(-1, targets.shape[-1]).to(dtype)
        rows, cols = a.shape
        if rows >= cols:
            gram = a.mT @ a + ridge * torch.eye(cols, dtype=dtype, device=a.device)
            return torch.cholesky_solve(a.mT @ t, torch.linalg.cholesky(gram))
        gram = a @ a.mT + ridge * torch.eye(rows, dtype=dtype, device=a.device)
        return a.mT @ torch.cholesky_solve(t, torch.linalg.cholesky(gram))


def initial_targets(shape: tuple[int, ...], std: float) -> nn.Parameter:
    return nn.Parameter(nn.init.trunc_normal_(torch.empty(shape), std=std, a=-2 * std, b=2 * std))


class TargetDense(nn.Module):
    """A target-space dense layer (the paper's TSDense): targets (n̄, τ̄, out), weights solved per call."""

    def __init__(self, realisation: tuple[int, int], out_dim: int, ridge: float, cascade: str, std: float,
                 activation=None):
        super().__init__()
        self.targets = initial_targets((*realisation, out_dim), std)
        self.ridge, self.scu, self.activation = ridge, cascade == "scu", activation or nn.Identity()

    def solve(self, realised_in: torch.Tensor) -> torch.Tensor:
        return ridge_solve(realised_in, self.targets, self.ridge)

    def sums(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return with_bias(x) @ weights.to(x.dtype)

    def realise(self, realised_in: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """X̄_j: what the layer feeds the next one's solve (SCU: its real outputs on X̄; OCU: f(targets))."""
        return self.activation(self.sums(realised_in, weights) if self.scu else self.targets)

    def forward(self, realised_in: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(X̄_{j-1}, X_{j-1}) -> (X̄_j, X_j)."""
        weights = self.solve(realised_in)
        return self.realise(realised_in, weights), self.activation(self.sums(x, weights))


class TargetRNN(TargetDense):
    """A target-space tanh RNN layer (the paper's TSRNNDense): the same targets and solve as a dense layer,
    but the solve's inputs hold the previous step's f(target) beside x̄_t and the sums run through time."""

    def __init__(self, realisation: tuple[int, int], hidden_dim: int, ridge: float, cascade: str, std: float):
        super().__init__(realisation, hidden_dim, ridge, cascade, std, activation=nn.Tanh())

    def solve(self, realised_in: torch.Tensor) -> torch.Tensor:
        previous = nn.functional.pad(torch.tanh(self.targets[:, :-1]), (0, 0, 1, 0))  # f(T_{t-1}), f(T_0) = 0
        return ridge_solve(torch.cat([realised_in, previous.to(realised_in.dtype)], -1), self.targets, self.ridge)

    def sums(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, T, H) pre-activation sums of the RNN with [b; W_x; W_h] = weights."""
        weights = weights.to(x.dtype)
        w_h = weights[1 + x.shape[-1]:]
        drive = (with_bias(x) @ weights[: 1 + x.shape[-1]]).unbind(1)  # the input side of every step at once
        h, sums = torch.zeros_like(drive[0]), []
        for step in drive:  # unbind, not drive[:, t]: one gradient stack in backward, not a zero tensor per step
            sums.append(torch.addmm(step, h, w_h))
            h = torch.tanh(sums[-1])
        return torch.stack(sums, 1)


class TargetSpaceRNN(SequenceModel):
    def __init__(self, cfg: TargetSpaceConfig, sizes: VocabSizes):
        super().__init__()
        shape = (cfg.realisation_batch, cfg.realisation_length)
        if cfg.realisation_inputs == "symbols":
            realisation = nn.functional.one_hot(torch.randint(sizes.src, shape), sizes.src).float()
        else:
            realisation = torch.randn(*shape, sizes.src)
        self.register_buffer("realisation", realisation)  # X̄: fixed for the whole run, saved with the model
        common = dict(realisation=shape, ridge=cfg.ridge, cascade=cfg.cascade, std=cfg.target_std)
        self.rnn = nn.ModuleList(TargetRNN(hidden_dim=cfg.hidden_dim, **common) for _ in range(cfg.layers))
        self.out = TargetDense(out_dim=sizes.tgt, **common)
        if cfg.projection:
            self.project()

    @torch.no_grad()
    def project(self) -> None:
        """Each layer's targets become the sums its solved weights produce on X̄ (section 3.4)."""
        realised = self.realisation
        for layer in (*self.rnn, self.out):
            layer.targets.copy_(layer.sums(realised, layer.solve(realised)))
            realised = layer.realise(realised, layer.solve(realised))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (B, T, F) -> top-layer outputs (B, T, O)."""
        realised, x = self.realisation.to(inputs.dtype), inputs
        for layer in (*self.rnn, self.out):
            realised, x = layer(realised, x)
        return x

    def outputs(self, batch) -> torch.Tensor:
        return self(batch.inputs)

    def describe(self) -> dict[str, float]:
        """How far the solved weights miss the targets on X̄: RMS of (realised sums - targets), per layer."""
        with torch.no_grad():
            realised, report = self.realisation, {}
            for i, layer in enumerate((*self.rnn, self.out)):
                weights = layer.solve(realised)
                gap = layer.sums(realised, weights) - layer.targets
                report[f"target_gap{i + 1}"] = gap.square().mean().sqrt().item()
                realised = layer.realise(realised, weights)
        return report


@MODELS.register("target_space_rnn", config=TargetSpaceConfig)
def build_target_space_rnn(cfg: TargetSpaceConfig, sizes: VocabSizes) -> TargetSpaceRNN:
    return TargetSpaceRNN(cfg, sizes)
