"""Gradient clipping: all parameters together, or each on its own; the inverse square-root schedule."""

from __future__ import annotations

import pytest
import torch

from seqtool.recipe.schema import ScheduleSpec
from seqtool.training.optim import Schedule, clip_gradients


def _params(*norms: float) -> list[torch.Tensor]:
    params = []
    for norm in norms:
        p = torch.zeros(2, requires_grad=True)
        p.grad = torch.tensor([norm * 0.6, norm * 0.8])  # a gradient of exactly this norm
        params.append(p)
    return params


@pytest.mark.parametrize("per_parameter, after", [(False, [0.6, 0.8]), (True, [1.0, 1.0])])
def test_clipping_together_or_per_parameter(per_parameter, after):
    params = _params(3.0, 4.0)
    total = clip_gradients(params, 1.0, per_parameter)
    assert float(total) == pytest.approx(5.0)  # the norm before clipping, either way
    assert [float(p.grad.norm()) for p in params] == pytest.approx(after, rel=1e-5)


def test_no_limit_leaves_gradients_and_reports_non_finite_norms():
    params = _params(3.0, 4.0)
    assert float(clip_gradients(params, None, True)) == pytest.approx(5.0)
    assert [float(p.grad.norm()) for p in params] == pytest.approx([3.0, 4.0])
    params[0].grad[0] = float("nan")
    assert not torch.isfinite(clip_gradients(params, 1.0, True))


def test_inverse_sqrt_warms_up_linearly_then_decays_as_the_inverse_square_root():
    schedule = Schedule(ScheduleSpec(name="inverse_sqrt", warmup_steps=200), 1e-3)
    assert schedule.lr(0) == pytest.approx(1e-3 / 200)  # the first update already moves
    assert schedule.lr(99) == pytest.approx(0.5e-3)
    assert schedule.lr(199) == schedule.lr(200) == pytest.approx(1e-3)  # the peak, continuous
    assert schedule.lr(800) == pytest.approx(0.5e-3)  # lr * sqrt(warmup / step)
    assert schedule.lr(20000) == pytest.approx(1e-4)


def test_a_schedule_counts_from_its_origin_and_checkpoints_it():
    spec = ScheduleSpec(name="inverse_sqrt", warmup_steps=4)
    fresh, moved = Schedule(spec, 1.0), Schedule(spec, 1.0)
    moved.origin = 10  # a fine-tuned run that keeps the parent's step 10 but restarts the schedule
    assert [moved.lr(10 + s) for s in range(8)] == [fresh.lr(s) for s in range(8)]
    restored = Schedule(spec, 1.0)
    restored.load_state_dict(moved.state_dict())
    assert restored.origin == 10
    restored.load_state_dict({"plateau_scale": 1.0, "bad": 0, "best": None})  # a checkpoint from before origins
    assert restored.origin == 0
