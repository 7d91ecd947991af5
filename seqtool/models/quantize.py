"""Quantized training: k-bit fake quantization of weights and activations with the straight-through
estimator (Hubara, Courbariaux, Soudry, El-Yaniv and Bengio 2018, "Quantized Neural Networks").

A recipe switch that works for every model: `quantize_model` rewrites the weight matrices of the
model's linear, convolution and recurrent layers and the inputs of those layers; models know nothing
of it. Forward computes with the quantized values, backward with the straight-through estimator
(STE), so the float latent weights keep learning:

    c      clip range; x_c = clip(x, -c, c)
    q(x)   = c * (2 * round((x_c / c + 1) / 2 * (n - 1)) / (n - 1) - 1),   n = 2^k levels
    dq/dx  = 1_{|x| <= c}                                                   (the paper's g_r = g_q 1_{|r|<=1})

The grid is mid-rise (no zero level), so k = 1 is the paper's sign binarization q = c * Sign(x) and
every k gives exactly 2^k levels (torch's fake_quantize_per_tensor_affine has a zero level, so its
1-bit grid is {-c, 0}, not a sign). The paper leaves its grid convention open [card 12: ?].

Clip ranges: weights per output row, c = max|W_i| for k >= 2 (GNMT section 6's s_i = max|W[i,:]|) and
c = mean|W_i| for k = 1 (XNOR-Net's scale: with the max every weight would jump to the row's largest);
activations (each quantized layer's input) per layer, c = a running mean of the batch's max |x| taken
in training and frozen in eval, kept in the state dict so a resumed run continues exactly.

Where it does not reach: the hidden state inside torch's fused LSTM/GRU kernel stays float (only
weights and the layer's input are quantized there); embeddings stay float (a lookup, no multiply).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

# Layers whose 2-D+ weights are quantized: their parameter names (all weights of a recurrent layer).
QUANTIZED_LAYERS = (nn.Linear, nn.Conv1d, nn.RNNBase)


def fake_quantize(x: torch.Tensor, bits: int, clip: torch.Tensor | float) -> torch.Tensor:
    """x on the 2^bits-level mid-rise grid over [-clip, clip]; the gradient is 1 inside, 0 outside."""
    clip = torch.as_tensor(clip, dtype=x.dtype, device=x.device).clamp_min(torch.finfo(x.dtype).tiny)
    clipped = torch.clamp(x, -clip, clip)
    steps = 2**bits - 1
    levels = torch.round((clipped / clip + 1) / 2 * steps)
    quantized = clip * (2 * levels / steps - 1)
    return quantized.detach() + (clipped - clipped.detach())  # exact levels forward, the STE backward


class WeightQuantizer(nn.Module):
    """The parametrization W -> q(W) with a per-row clip range (see the module docstring)."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        rows = weight.detach().flatten(1).abs()
        clip = rows.mean(1) if self.bits == 1 else rows.amax(1)
        return fake_quantize(weight, self.bits, clip.view(-1, *[1] * (weight.dim() - 1)))


class ActivationQuantizer(nn.Module):
    """q(x) over a running clip range: the exponential mean of each training batch's max |x|."""

    def __init__(self, bits: int, momentum: float = 0.01):
        super().__init__()
        self.bits, self.momentum = bits, momentum
        self.register_buffer("clip", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            peak = x.detach().abs().amax().float()
            with torch.no_grad():
                self.clip.copy_(torch.where(self.seen, torch.lerp(self.clip, peak, self.momentum), peak))
                self.seen.fill_(True)
        return fake_quantize(x, self.bits, self.clip.to(x.dtype))


def _quantize_input(module: nn.Module, args: tuple) -> tuple:
    return (module.input_quantizer(args[0]), *args[1:])


def _weight_names(module: nn.Module) -> list[str]:
    """Its weights, whether plain parameters or already parametrized (e.g. weight-normed: then the
    quantizer chains after the norm and quantizes the weight the layer computes with)."""
    plain = [n for n, _ in module.named_parameters(recurse=False)]
    derived = list(module.parametrizations) if parametrize.is_parametrized(module) else []
    return [n for n in plain + derived if n.startswith("weight")]


def quantize_model(model: nn.Module, weights: int | None, activations: int | None) -> nn.Module:
    """Fake-quantize (in place) the weights and inputs of every linear, convolution and recurrent layer."""
    for module in list(model.modules()):
        if not isinstance(module, QUANTIZED_LAYERS):
            continue
        if weights is not None:
            names = [n for n in _weight_names(module) if getattr(module, n).dim() >= 2]
            for name in names:
                parametrize.register_parametrization(module, name, WeightQuantizer(weights))
        if activations is not None:
            module.input_quantizer = ActivationQuantizer(activations)
            module.input_quantizer.hook = module.register_forward_pre_hook(_quantize_input)
    return model


def fold_quantization(model: nn.Module) -> nn.Module:
    """A plain float model again (in place), e.g. before int8 conversion: each weight parametrization
    becomes its quantized value, the activation quantizers go."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
        if isinstance(getattr(module, "input_quantizer", None), ActivationQuantizer):
            module.input_quantizer.hook.remove()
            del module.input_quantizer
    return model
