"""Normalizations inside recurrent cells: the properties their papers state, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from seqtool.models.recurrent.cells import norm_config
from seqtool.models.recurrent.layers import Recurrent
from seqtool.models.recurrent.norms import build_norm


def make(spec, features=6, shift=True):
    return build_norm(norm_config(spec), features, shift=shift)


def test_atn_with_window_one_is_layer_norm():
    a = torch.randn(4, 7, 12, dtype=torch.float64) * 3 + 1
    atn = make({"name": "atn", "window": 1}, 12).double()
    out = atn.sequence(a, 0, atn.memory(4, a), None)[0]
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(a, (12,), eps=1e-5), atol=1e-12, rtol=0)


def test_atn_window_statistics_by_hand():
    """k = 3: the statistic at step t pools steps max(0, t-2)..t of the example, features and time jointly."""
    a = torch.randn(2, 6, 5, dtype=torch.float64)
    atn = make({"name": "atn", "window": 3}, 5).double()
    out = atn.sequence(a, 0, atn.memory(2, a), None)[0]
    for t in range(6):
        window = a[1, max(0, t - 2) : t + 1]
        expect = (a[1, t] - window.mean()) / torch.sqrt(window.var(unbiased=False) + 1e-5)
        torch.testing.assert_close(out[1, t], expect)
    state, steps = atn.memory(2, a), []  # step by step, carrying the window, from a later start time
    for t in range(6):
        y, state = atn.step(a[:, t], t, state, None)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), out)


def test_atn_lstm_is_invariant_to_scaling_the_weights():
    torch.manual_seed(0)
    rnn = Recurrent("lstm", 3, 8, norm={"name": "atn", "window": 4, "eps": 1e-12})  # exact when eps -> 0
    x = torch.randn(5, 10, 3)
    before = rnn(x)[0]
    with torch.no_grad():
        rnn.layers[0].weight_hh.mul_(3.0)
        rnn.layers[0].weight_ih.mul_(0.5)
    torch.testing.assert_close(rnn(x)[0], before, atol=1e-5, rtol=1e-4)


def test_batch_norm_uses_per_step_batch_statistics_and_skips_padding():
    bn = make("batch", 3)
    a = torch.randn(4, 5, 3)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[3, 2:] = False
    a[3, 2:] = 1e6  # padding must not move the statistics
    out = bn.sequence(a, 0, (), mask)[0]
    real = a[:3, 4]
    expect = (real - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(out[:3, 4], expect)


def test_recurrent_batch_norm_keeps_statistics_per_time_step():
    rbn = make({"name": "recurrent_batch", "max_time": 3, "momentum": 1.0}, 2)
    assert torch.all(rbn.weight == 0.1)  # Cooijmans et al.: gamma starts at 0.1
    a = torch.arange(4 * 5 * 2, dtype=torch.float32).view(4, 5, 2) ** 1.5
    rbn.sequence(a, 0, (), None)
    torch.testing.assert_close(rbn.running_mean[:2], a[:, :2].mean(0))  # steps 0, 1 have their own slot
    torch.testing.assert_close(rbn.running_var[1], a[:, 1].var(0, unbiased=True))
    torch.testing.assert_close(rbn.running_mean[2], a[:, 4].mean(0))  # steps >= max_time - 1 share the last
    rbn.eval()
    late = rbn.step(a[:, 0], 40, (), None)[0]  # beyond max_time: the last slot's statistics
    expect = 0.1 * (a[:, 0] - rbn.running_mean[2]) / torch.sqrt(rbn.running_var[2] + 1e-5)
    torch.testing.assert_close(late, expect)


def test_bln_limits():
    """B = 1: layer norm / sqrt(d); large B: mostly batch norm (Ziaee and Cano 2022)."""
    d = 16
    bln = make("bln", d)
    one = torch.randn(1, 3, d)
    torch.testing.assert_close(bln.sequence(one, 0, (), None)[0],
                               (1 - 1e-4) * torch.nn.functional.layer_norm(one, (d,), eps=1e-3) / math.sqrt(d))
    many = torch.randn(1000, 2, d) * 2 + 3
    bn = (many - many.mean(0)) / torch.sqrt(many.var(0, unbiased=False) + 1e-3)
    out = make("bln", d).sequence(many, 0, (), None)[0] * math.sqrt(d)
    assert (out - bn).abs().mean() < 0.01 * bn.abs().mean()
    rescaled = make({"name": "bln", "gain": None}, d)  # gamma starts at sqrt(d): B = 1 is layer norm itself
    torch.testing.assert_close(rescaled.sequence(one, 0, (), None)[0],
                               (1 - 1e-4) * torch.nn.functional.layer_norm(one, (d,), eps=1e-3))


@pytest.mark.parametrize("norm", ["batch", "bln"])
def test_batch_statistics_switch_to_running_ones_in_evaluation(norm):
    layer = make({"name": norm, "momentum": 1.0}, 3)  # momentum 1: the running statistics are the last step's
    a = torch.randn(8, 4, 3) * 2 + 5
    layer.sequence(a, 0, (), None)
    layer.eval()
    probe = torch.randn(2, 1, 3)
    mean, var = a[:, -1].mean(0), a[:, -1].var(0, unbiased=True)
    x_b = (probe - mean) / torch.sqrt(var + layer.eps)
    if norm == "bln":  # the training batch size (8) sets the mix
        x_f = torch.nn.functional.layer_norm(probe, (3,), eps=layer.eps)
        x_b = ((1 / 8 - 1e-4) * x_f + (1 - (1 / 8 + 1e-4)) * x_b) / math.sqrt(3)
    torch.testing.assert_close(layer.sequence(probe, 0, (), None)[0], x_b)


def test_norm_configs_fail_clearly():
    with pytest.raises(ValueError, match="did you mean 'layer'"):
        norm_config("layr")
    with pytest.raises(ValueError, match="window"):
        norm_config({"name": "atn", "window": 0})
    with pytest.raises(ValueError, match="a name or a mapping"):
        norm_config(3)
