"""GNMT's logit clipping (train.quantize.logits): the output layer's logits stay in [-γ, γ] where it is called
and in the fused training loss, and the gradient is clamp's own (zero where a logit was clipped)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqtool.errors import SeqtoolError
from seqtool.models.losses import output_loss
from seqtool.models.quantize import clip_logits

BOUND = 2.0


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.out = nn.Linear(6, 9)
        nn.init.normal_(self.out.weight, std=3.0)  # many logits beyond the bound


def _clipped_head() -> _Head:
    torch.manual_seed(0)
    return clip_logits(_Head(), BOUND)


def test_called_output_layer_is_bounded_and_passes_the_gradient_inside_only():
    head = _clipped_head()
    x = torch.randn(32, 6, requires_grad=True)
    z = head.out(x)
    raw = nn.functional.linear(x, head.out.weight, head.out.bias)
    assert z.abs().max() <= BOUND and (raw.abs() > BOUND).any()
    (weights,) = torch.autograd.grad(z.sum(), head.out.weight)
    expected = ((raw.abs() <= BOUND).float().t() @ x).detach()
    assert torch.allclose(weights, expected, atol=1e-5)


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_fused_training_loss_equals_cross_entropy_of_the_clamped_logits(epsilon):
    head = _clipped_head()
    h = torch.randn(300, 6, requires_grad=True)  # over two of the loss's chunks
    targets = torch.randint(1, 9, (300,))
    loss, nll = output_loss(h, targets, head.out, epsilon)
    fused = torch.autograd.grad(loss, (h, head.out.weight, head.out.bias))
    logits = nn.functional.linear(h, head.out.weight, head.out.bias).clamp(-BOUND, BOUND)
    expected = nn.functional.cross_entropy(logits, targets, reduction="sum", label_smoothing=epsilon)
    reference = torch.autograd.grad(expected, (h, head.out.weight, head.out.bias))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert nll.item() == pytest.approx(nn.functional.cross_entropy(logits, targets, reduction="sum").item(), rel=1e-5)
    for got, want in zip(fused, reference):
        assert torch.allclose(got, want, atol=1e-4)


def test_a_model_without_an_output_layer_is_refused():
    with pytest.raises(SeqtoolError, match="train.quantize.logits: .* no linear output layer"):
        clip_logits(nn.Sequential(nn.Linear(2, 2)), BOUND)
