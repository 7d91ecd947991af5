"""Pieces the convolutional models share (ConvS2S, Gehring et al. 2017; GCNN, Dauphin et al. 2017).

* Block layouts are structured YAML, a list of {channels, kernel, repeat} (never strings to eval).
* Weight normalization (Salimans and Kingma 2016) on every linear and convolutional layer:
      w = g * v / ||v||   (one g per output unit),  with g initialised to ||v|| so w starts at v,
  and v ~ N(0, std) with the std each paper gives (see `normed_linear`).
* A 1-D convolution of width k is one matmul over windows of k positions:
      y_t = W [x_{t-a}; ...; x_{t-a+k-1}] + b,  W: (out, k * in)
  a = k - 1 for a causal convolution (zeros on the left only, so y_t sees no x_{>t}) and
  a = (k - 1) // 2 for a centred one (zeros on both sides). Training runs it over all positions at
  once as a convolution with W viewed as (out, in, 1, k), on the batch-first (B, T, C) input seen as a
  channels-last (B, C, 1, T) image: no copy in or out, and oneDNN's kernel measured 4-5% faster per
  ConvS2S training step than the matmul over copied windows (bench/README.md, issue 20). Incremental
  decoding runs the matmul on one window made of a buffer of the previous k - 1 inputs and the new
  input (fairseq's LinearizedConvolution idea, batch-first here), so each step costs one position and
  equals the full forward up to rounding.
* Gates (Dauphin et al. 2017, sec. 3 and fig. 3): glu A * sigmoid(B), gtu tanh(A) * sigmoid(B),
  relu, tanh; the gated ones make 2C outputs for C channels.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, Field
from torch import nn
from torch.nn.utils import parametrize

from seqtool.models.config import SECTION

SQRT_HALF = math.sqrt(0.5)
GATED = {"glu": True, "gtu": True, "relu": False, "tanh": False}


class ConvBlockSpec(BaseModel):
    """`repeat` convolutional layers in a row, each with `channels` outputs and kernel width `kernel`."""

    model_config = SECTION

    channels: int = Field(gt=0, description="output channels of each layer")
    kernel: int = Field(gt=0, description="kernel width (positions each output sees in its input)")
    repeat: int = Field(1, ge=1, description="how many such layers in a row")


def expand_blocks(blocks: list[ConvBlockSpec]) -> list[ConvBlockSpec]:
    """One spec per layer (repeat unrolled)."""
    return [block.model_copy(update={"repeat": 1}) for block in blocks for _ in range(block.repeat)]


class WeightNorm(nn.Module):
    """The parametrization w = g * v / ||v|| (norms over all but dim 0), as torch's weight_norm.

    In eval mode without autograd the result is kept and reused while g and v are unchanged (their
    version counters and storage): decoding calls every layer once per step with fixed weights,
    and recomputing the output layer's weight each step costs as much as a small layer's matmul.
    """

    def __init__(self):
        super().__init__()
        self._cached: tuple | None = None

    def forward(self, g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            return torch._weight_norm(v, g, 0)
        key = (g._version, v._version, g.data_ptr(), v.data_ptr())
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, torch._weight_norm(v, g, 0))
        return self._cached[1]

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.norm_except_dim(weight, 2, 0), weight

    def train(self, mode: bool = True):
        self._cached = None
        return super().train(mode)


def normed_linear(in_dim: int, out_dim: int, *, std: float, bias: bool = True) -> nn.Linear:
    """A weight-normalized linear layer with v ~ N(0, std), b = 0 and g = ||v|| (so w = v at start)."""
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.normal_(layer.weight, 0.0, std)
    if bias:
        nn.init.zeros_(layer.bias)
    parametrize.register_parametrization(layer, "weight", WeightNorm(), unsafe=True)
    return layer


class WindowConv(nn.Module):
    """A weight-normalized 1-D convolution over batch-first input, as a matmul over windows.

    std follows Gehring et al. (sec. 3.5) and Dauphin et al.: sqrt(gain * keep / (k * in)), gain 4
    before a GLU/GTU (the gate halves the variance twice over), 2 before a ReLU, 1 otherwise.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: int, *, causal: bool, std: float):
        super().__init__()
        self.kernel, self.causal, self.in_dim = kernel, causal, in_dim
        self.linear = normed_linear(kernel * in_dim, out_dim, std=std)

    def forward(self, x: torch.Tensor, left: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, out). Zeros lie beyond both ends of x (beyond the left end only if
        causal); a causal convolution reads `left` (B, k-1, C) instead when given: the k-1 inputs
        before x, carried from the previous call."""
        k = self.kernel
        if k == 1:
            return self.linear(x)
        if not self.causal:
            padded = nn.functional.pad(x, (0, 0, (k - 1) // 2, k // 2))
        elif left is None:
            padded = nn.functional.pad(x, (0, 0, k - 1, 0))
        else:
            padded = torch.cat([left, x], dim=1)
        weight = self.linear.weight.view(-1, 1, k, x.size(2)).permute(0, 3, 1, 2)  # (out, C, 1, k)
        image = padded.unsqueeze(1).permute(0, 3, 1, 2)  # (B, C, 1, T + k - 1), channels-last
        out = nn.functional.conv2d(image, weight.contiguous(memory_format=torch.channels_last), self.linear.bias)
        return out.permute(0, 2, 3, 1).squeeze(1)  # (B, T, out), contiguous

    def step(self, x: torch.Tensor, left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One causal step: x (N, 1, C) after the k-1 inputs `left` (N, k-1, C) -> output (N, 1, out)
        and the next step's `left`; the same arithmetic as `forward` over the whole sequence."""
        window = torch.cat([left, x], dim=1)  # (N, k, C)
        return self.linear(window.view(x.size(0), 1, -1)), window[:, 1:]

    def next_left(self, x: torch.Tensor, left: torch.Tensor | None) -> torch.Tensor:
        """The `left` of the next call, after this one read x (B, T, C): its last k-1 inputs (B, k-1, C)."""
        k = self.kernel
        if left is None:
            left = x.new_zeros(x.size(0), k - 1, x.size(2))
        return torch.cat([left, x], dim=1)[:, x.size(1) :]


def conv_std(in_dim: int, kernel: int, *, gate: str, dropout: float) -> float:
    gain = 4.0 if GATED[gate] else 2.0 if gate == "relu" else 1.0
    return math.sqrt(gain * (1.0 - dropout) / (kernel * in_dim))


def apply_gate(y: torch.Tensor, gate: str) -> torch.Tensor:
    """(B, T, 2C) -> (B, T, C) for glu/gtu; (B, T, C) -> (B, T, C) for relu/tanh."""
    if gate == "glu":
        return nn.functional.glu(y, dim=-1)
    if gate == "gtu":
        a, b = y.chunk(2, dim=-1)
        return torch.tanh(a) * torch.sigmoid(b)
    return torch.relu(y) if gate == "relu" else torch.tanh(y)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by `factor` on the way back."""
    return _ScaleGrad.apply(x, factor) if torch.is_grad_enabled() else x
