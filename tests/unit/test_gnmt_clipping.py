"""GNMT's clipping (Wu et al. 2016, section 6). Logits (train.quantize.logits): the output layer's logits stay in
[-γ, γ] where it is called and in the fused training loss, and the gradient is clamp's own (zero where a logit was
clipped). Accumulators (the lstm cell's `clip`, GNMT's accumulator_clip): c_t and h_t stay in [-δ, δ] at every
step, a bound no value reaches changes nothing, and the gradient still reaches the weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqtool.errors import SeqtoolError
from seqtool.models.losses import output_loss
from seqtool.models.quantize import clip_logits, quantize_model
from seqtool.models.recurrent.layers import Recurrent

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


def _lstm(clip: float | None) -> Recurrent:
    torch.manual_seed(0)
    return Recurrent({"name": "lstm", "fused": False, "clip": clip}, 3, 5)


def test_clipped_lstm_keeps_every_cell_value_and_output_in_bounds():
    x = 10 * torch.randn(4, 30, 3)  # large inputs drive c_t well past the bound without clipping
    free_out, (_, free_c, _) = _lstm(None)(x)
    clipped = _lstm(0.3)
    assert not clipped.fused and free_c.abs().max() > 1.0
    out, (h, c, _) = clipped(x)
    assert out.abs().max() <= 0.3 and c.abs().max() <= 0.3 and h.abs().max() <= 0.3
    out.sum().backward()
    grads = [p.grad for p in clipped.parameters()]
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_a_bound_no_value_reaches_changes_nothing():
    x = torch.randn(4, 12, 3)
    assert torch.equal(_lstm(1e6)(x)[0], _lstm(None)(x)[0])


def test_quantized_training_reaches_the_clipped_lstms_weights():
    """GNMT trained clipped accumulators with quantized weights: the time-loop LSTM's W and U are k-bit too."""
    lstm = quantize_model(_lstm(1.0), weights=2, activations=None)
    cell = lstm.layers[0]
    for weight in (cell.weight_ih, cell.weight_hh):
        assert all(len(row.unique()) <= 4 for row in weight)
    lstm(torch.randn(2, 5, 3))[0].sum().backward()
    assert cell.parametrizations.weight_hh.original.grad.abs().sum() > 0
