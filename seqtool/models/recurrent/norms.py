"""Normalizations of recurrent pre-activations, registered by name for `norm:` in recurrent models.

A recurrent cell normalizes each *site* separately, each with its own gain gamma and (where no bias
follows) shift beta: the input projection W_x x_t, the recurrent projection W_h h_{t-1} and, in LSTMs,
the cell state before its tanh, as in recurrent batch norm (Cooijmans et al. 2017):
    [f, i, o, g] = N_h(W_h h_{t-1}) + N_x(W_x x_t) + b;   h_t = o * tanh(N_c(c_t))
Every norm ends in y = gamma * x_hat + beta; they differ in the statistics of x_hat = (a - mu) / sqrt(var + eps):
    layer            mu, var over the features of each example and step (Ba et al. 2016).
    batch            over the batch at each step (Ioffe and Szegedy 2015); one set of running
                     statistics shared by all steps is used in evaluation.
    recurrent_batch  over the batch at each step, with running statistics kept per time step t < max_time
                     (later steps reuse the last) and gamma initialised to 0.1 (Cooijmans et al. 2017:
                     gamma = 1 makes gradients vanish through time, <= 0.01 is unstable).
    bln              batch-layer normalization (Ziaee and Cano 2022): x_hat = [(1/B - 1e-4) x_f +
                     (1 - (1/B + 1e-4)) x_b] / sqrt(d), x_b with batch and x_f with feature statistics,
                     eps = 1e-3; so B = 1 gives LN / sqrt(d) and large B mostly BN. Evaluation uses running
                     batch statistics, current feature statistics and the training batch size in the mix.
    atn              assorted-time normalization (Pospisil et al. 2022): LN whose mu and (biased) var are
                     taken jointly over the features of the k most recent pre-activations of the example at
                     this site (fewer at the start); k = 1 is LN; scaling the weights leaves it unchanged.
                     Past pre-activations stay in the graph, so gradients flow through the statistics.
Batch statistics skip padded rows (a mask), so variable-length batches normalize only real steps.

A norm sees whole sequences (`sequence`, for the input site, computed once for all steps) or one step
(`step`, inside the time loop); `t0`/`t` is the absolute time index (kept in the recurrent state, so that
step-wise decoding matches a full forward pass), `memory` what the norm carries between steps (ATN's window
of per-step sums), fresh from `memory(batch)` at the start of a sequence.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from seqtool.models.components import ComponentConfig
from seqtool.registry import Registry

NORMS = Registry("norm")


class NormConfig(ComponentConfig):
    eps: float = Field(1e-5, gt=0, description="added to the variance")


class BatchNormConfig(NormConfig):
    momentum: float = Field(0.1, gt=0, le=1, description="running statistics: r <- (1 - m) r + m * batch statistic")


class RecurrentBatchNormConfig(BatchNormConfig):
    gain: float = Field(0.1, gt=0, description="initial gamma (Cooijmans et al.: 0.1)")
    max_time: int = Field(256, gt=0, description="steps with their own running statistics; later steps reuse the last")


class BLNConfig(BatchNormConfig):
    eps: float = Field(1e-3, gt=0, description="added to the variance (official code: 0.001)")
    gain: float | None = Field(1.0, gt=0, description="initial gamma (paper: 1); null: sqrt(d), which cancels "
                               "the 1/sqrt(d) at the start (papers.md card 10 warns gamma may need to learn it)")


class ATNConfig(NormConfig):
    window: int = Field(20, ge=1, description="k, the pre-activations per statistic (1 = layer norm; paper: 25 "
                        "adding, 45 copying, 20 char PTB)")


class SiteNorm(nn.Module):
    """y = gamma * x_hat + beta over the last axis; subclasses define x_hat through `sequence`."""

    stateful: ClassVar[bool] = False  # carries memory between steps

    def __init__(self, features: int, *, gain: float = 1.0, shift: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.full((features,), float(gain)))
        self.bias = nn.Parameter(torch.zeros(features)) if shift else None

    def memory(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ()

    def affine(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias if self.bias is not None else x * self.weight

    def sequence(self, a: torch.Tensor, t0: int, memory: tuple, mask: torch.Tensor | None):
        """a (B, T, F) at steps t0.., mask (B, T) True on real steps -> (normalized (B, T, F), memory)."""
        raise NotImplementedError

    def step(self, a: torch.Tensor, t: int, memory: tuple, mask: torch.Tensor | None):
        """a (B, F) at step t -> (normalized (B, F), memory)."""
        y, memory = self.sequence(a.unsqueeze(1), t, memory, None if mask is None else mask.unsqueeze(1))
        return y.squeeze(1), memory


class LayerNorm(SiteNorm):
    def __init__(self, cfg: NormConfig, features: int, *, shift: bool):
        super().__init__(features, shift=shift)
        self.eps = cfg.eps

    def sequence(self, a, t0, memory, mask):
        return nn.functional.layer_norm(a, a.shape[-1:], self.weight, self.bias, self.eps), memory

    def step(self, a, t, memory, mask):
        return nn.functional.layer_norm(a, a.shape[-1:], self.weight, self.bias, self.eps), memory


def batch_moments(a: torch.Tensor, mask: torch.Tensor | None):
    """Mean and biased variance over dim 0 of a (B, T, F), real rows only -> (T, F), (T, F), rows (T, 1)."""
    if mask is None:
        return a.mean(0), a.var(0, unbiased=False), a.new_full((a.size(1), 1), float(a.size(0)))
    w = mask.to(a.dtype).unsqueeze(-1)  # (B, T, 1)
    rows = w.sum(0).clamp(min=1.0)
    mean = (a * w).sum(0) / rows
    return mean, ((a - mean).square() * w).sum(0) / rows, rows


class BatchNorm(SiteNorm):
    """Per-step batch statistics; running statistics (unbiased variance) shared by all steps."""

    couples_examples: ClassVar[bool] = True  # an example's output depends on the batch (DP-SGD refuses it)

    def __init__(self, cfg: BatchNormConfig, features: int, *, shift: bool, gain: float = 1.0, slots: int = 1):
        super().__init__(features, gain=gain, shift=shift)
        self.eps, self.momentum = cfg.eps, cfg.momentum
        self.register_buffer("running_mean", torch.zeros(slots, features))
        self.register_buffer("running_var", torch.ones(slots, features))

    def statistics(self, a, t0, mask):
        """(mean, var, rows) for a (B, T, F): batch statistics and real rows per step (T, 1) in training,
        the running statistics and None otherwise."""
        if not self.training:
            index = self.slot(t0, a.size(1), a.device)
            return self.running_mean[index], self.running_var[index], None
        mean, var, rows = batch_moments(a, mask)
        with torch.no_grad():
            self.update(mean, var * rows / (rows - 1).clamp(min=1.0), t0)
        return mean, var, rows

    def slot(self, t0: int, steps: int, device) -> torch.Tensor:
        return torch.zeros(steps, dtype=torch.long, device=device)

    def update(self, mean: torch.Tensor, var: torch.Tensor, t0: int) -> None:
        """Fold the (T, F) step statistics into the single slot, one step after another (closed form)."""
        self._fold(0, mean, var)

    def _fold(self, slot: int, mean: torch.Tensor, var: torch.Tensor) -> None:
        m, steps = self.momentum, mean.size(0)
        decay = (1 - m) ** torch.arange(steps - 1, -1, -1, device=mean.device, dtype=mean.dtype)
        keep = (1 - m) ** steps
        self.running_mean[slot] = keep * self.running_mean[slot] + m * (decay.unsqueeze(1) * mean).sum(0)
        self.running_var[slot] = keep * self.running_var[slot] + m * (decay.unsqueeze(1) * var).sum(0)

    def sequence(self, a, t0, memory, mask):
        mean, var, _ = self.statistics(a, t0, mask)
        return self.affine((a - mean) * torch.rsqrt(var + self.eps)), memory


class RecurrentBatchNorm(BatchNorm):
    """Batch norm with running statistics per time step (Cooijmans et al. 2017)."""

    def __init__(self, cfg: RecurrentBatchNormConfig, features: int, *, shift: bool):
        super().__init__(cfg, features, shift=shift, gain=cfg.gain, slots=cfg.max_time)
        self.max_time = cfg.max_time

    def slot(self, t0, steps, device):
        return torch.arange(t0, t0 + steps, device=device).clamp(max=self.max_time - 1)

    def update(self, mean, var, t0):
        own = max(0, min(mean.size(0), self.max_time - 1 - t0))  # steps below the last slot: one slot each
        if own:
            index = torch.arange(t0, t0 + own, device=mean.device)
            m = self.momentum
            self.running_mean[index] = (1 - m) * self.running_mean[index] + m * mean[:own]
            self.running_var[index] = (1 - m) * self.running_var[index] + m * var[:own]
        if own < mean.size(0):
            self._fold(self.max_time - 1, mean[own:], var[own:])


class BatchLayerNorm(BatchNorm):
    """BLN: a batch-size-weighted mix of batch- and feature-normalized activations, over sqrt(d)."""

    def __init__(self, cfg: BLNConfig, features: int, *, shift: bool):
        super().__init__(cfg, features, shift=shift, gain=math.sqrt(features) if cfg.gain is None else cfg.gain)
        self.register_buffer("train_rows", torch.ones(1))

    def sequence(self, a, t0, memory, mask):
        mean, var, rows = self.statistics(a, t0, mask)
        if rows is None:
            rows = self.train_rows
        else:
            self.train_rows.fill_(float(rows.max()))
        x_b = (a - mean) * torch.rsqrt(var + self.eps)
        x_f = (a - a.mean(-1, keepdim=True)) * torch.rsqrt(a.var(-1, unbiased=False, keepdim=True) + self.eps)
        inv = 1.0 / rows  # 1/B: (T, 1) real rows per step in training, the training batch size otherwise
        x_hat = ((inv - 1e-4) * x_f + (1 - (inv + 1e-4)) * x_b) / math.sqrt(a.size(-1))
        return self.affine(x_hat), memory


class AssortedTimeNorm(SiteNorm):
    """ATN: layer norm with statistics over a window of the last k pre-activations (see the module notes)."""

    stateful = True

    def __init__(self, cfg: ATNConfig, features: int, *, shift: bool):
        super().__init__(features, shift=shift)
        self.eps, self.window = cfg.eps, cfg.window

    def memory(self, batch, like):
        return (like.new_zeros(batch, self.window - 1, 2),)  # per-step (sum a, sum a^2) of the last k-1 steps

    def sequence(self, a, t0, memory, mask):
        k, features, steps = self.window, a.size(-1), a.size(1)
        sums = torch.stack([a.sum(-1), a.square().sum(-1)], dim=-1)  # (B, T, 2)
        full = torch.cat([memory[0], sums], dim=1)  # (B, k-1+T, 2)
        totals = full.unfold(1, k, 1).sum(-1)  # (B, T, 2): window sums ending at each step
        count = (torch.arange(t0, t0 + steps, device=a.device).clamp(max=k - 1) + 1) * features
        mean = totals[..., 0] / count
        var = (totals[..., 1] / count - mean.square()).clamp(min=0.0)
        x_hat = (a - mean.unsqueeze(-1)) * torch.rsqrt(var + self.eps).unsqueeze(-1)
        return self.affine(x_hat), (full[:, full.size(1) - (k - 1):],)


@NORMS.register("none", config=NormConfig)
def build_none(cfg: NormConfig, features: int, *, shift: bool) -> None:
    return None


@NORMS.register("layer", config=NormConfig)
def build_layer(cfg: NormConfig, features: int, *, shift: bool) -> LayerNorm:
    return LayerNorm(cfg, features, shift=shift)


@NORMS.register("batch", config=BatchNormConfig)
def build_batch(cfg: BatchNormConfig, features: int, *, shift: bool) -> BatchNorm:
    return BatchNorm(cfg, features, shift=shift)


@NORMS.register("recurrent_batch", config=RecurrentBatchNormConfig)
def build_recurrent_batch(cfg: RecurrentBatchNormConfig, features: int, *, shift: bool) -> RecurrentBatchNorm:
    return RecurrentBatchNorm(cfg, features, shift=shift)


@NORMS.register("bln", config=BLNConfig)
def build_bln(cfg: BLNConfig, features: int, *, shift: bool) -> BatchLayerNorm:
    return BatchLayerNorm(cfg, features, shift=shift)


@NORMS.register("atn", config=ATNConfig)
def build_atn(cfg: ATNConfig, features: int, *, shift: bool) -> AssortedTimeNorm:
    return AssortedTimeNorm(cfg, features, shift=shift)


def build_norm(cfg: ComponentConfig, features: int, *, shift: bool) -> SiteNorm | None:
    """The norm for one site of `features` pre-activations (None for `none`)."""
    return NORMS.get(cfg.name).builder(cfg, features, shift=shift)
