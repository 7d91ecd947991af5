"""The target-space RNN (papers.md card 3): the ridge solve reproduces the targets exactly as lambda -> 0 (the
temporal cascade included), its gradient reaches the targets (gradcheck), it stays float32 under autocast, and
the model trains, resumes exactly and refuses quantized training through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from seqtool.cli import app
from seqtool.commands.recipes import load_recipe
from seqtool.errors import SeqtoolError
from seqtool.models.base import VocabSizes
from seqtool.models.recurrent.target_space import (
    TargetDense,
    TargetRNN,
    TargetSpaceConfig,
    TargetSpaceRNN,
    ridge_solve,
    with_bias,
)

TINY_LAMBDA = 1e-10


def _double(layer: TargetDense) -> TargetDense:
    return layer.double().requires_grad_(True)


def test_dense_weights_reproduce_the_targets_as_lambda_vanishes():
    torch.manual_seed(0)
    layer = _double(TargetDense((2, 3), out_dim=4, ridge=TINY_LAMBDA, cascade="scu", std=1.0))
    x_bar = torch.randn(2, 3, 7, dtype=torch.float64)  # 6 rows <= fan-in 7 + 1
    assert torch.allclose(layer.sums(x_bar, layer.solve(x_bar)), layer.targets, atol=1e-7)


def test_rnn_weights_reproduce_the_targets_through_time_as_lambda_vanishes():
    """With f(T_{t-1}) as the solve's recurrent input and an exact fit, running the RNN on X̄ meets every T_t."""
    torch.manual_seed(0)
    layer = _double(TargetRNN((2, 4), hidden_dim=6, ridge=TINY_LAMBDA, cascade="scu", std=1.0))
    x_bar = torch.randn(2, 4, 3, dtype=torch.float64)  # 8 rows <= 1 + 3 + 6
    sums = layer.sums(x_bar, layer.solve(x_bar))
    assert torch.allclose(sums, layer.targets, atol=1e-6)
    loose = _double(TargetRNN((2, 4), hidden_dim=6, ridge=1.0, cascade="scu", std=1.0))
    assert not torch.allclose(loose.sums(x_bar, loose.solve(x_bar)), loose.targets, atol=1e-2)


@pytest.mark.parametrize("rows", [3, 12], ids=["dual", "primal"])
def test_both_forms_of_the_solve_are_the_ridge_solution(rows):
    torch.manual_seed(rows)
    a, t, lam = torch.randn(rows, 5, dtype=torch.float64), torch.randn(rows, 2, dtype=torch.float64), 0.3
    full = with_bias(a)
    expected = torch.linalg.solve(full.mT @ full + lam * torch.eye(6, dtype=torch.float64), full.mT @ t)
    assert torch.allclose(ridge_solve(a, t, lam), expected, atol=1e-10)


def test_the_gradient_reaches_the_targets_through_the_solve():
    torch.manual_seed(0)
    rnn = _double(TargetRNN((2, 3), hidden_dim=3, ridge=0.1, cascade="scu", std=1.0))
    out = _double(TargetDense((2, 3), out_dim=2, ridge=0.1, cascade="scu", std=1.0))
    x_bar, x = torch.randn(2, 3, 2, dtype=torch.float64), torch.randn(2, 5, 2, dtype=torch.float64)

    def outputs(rnn_targets, out_targets):
        realised, h = torch.func.functional_call(rnn, {"targets": rnn_targets}, (x_bar, x))
        return torch.func.functional_call(out, {"targets": out_targets}, (realised, h))[1]

    assert torch.autograd.gradcheck(outputs, (rnn.targets.detach().clone().requires_grad_(),
                                              out.targets.detach().clone().requires_grad_()), fast_mode=True)


def test_the_solve_stays_float32_under_autocast():
    torch.manual_seed(0)
    model = TargetSpaceRNN(TargetSpaceConfig(hidden_dim=4, realisation_batch=3, realisation_length=5),
                           VocabSizes(2, 2))
    weights = model.rnn[0].solve(model.realisation)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.rnn[0].solve(model.realisation).dtype == torch.float32
    assert torch.equal(weights, model.rnn[0].solve(model.realisation))


RECIPE = """
name: tiny-ts
task: synthetic
data:
  synthetic: {kind: recall, length: 12, symbols: 2, delays: [3], train: 64, valid: 8, test: 8}
model: {arch: target_space_rnn, hidden_dim: 6, realisation_batch: 8, realisation_length: 6}
train: {optimizer: {lr: 0.01}, batch_size: 16, max_steps: 4, validate_every: 2, checkpoint: {every: 2, keep_last: 2}}
log: {tensorboard: false, progress: none, every: 1}
"""


def _train_losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").open()) if r["split"] == "train"}


def test_trains_resumes_exactly_and_refuses_quantized_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ts.yaml").write_text(RECIPE, encoding="utf-8")
    cli = CliRunner()
    assert cli.invoke(app, ["train", "ts.yaml"]).exit_code == 0
    cut = ["--set", "output_dir=cut"]
    assert cli.invoke(app, ["train", "ts.yaml", *cut, "--set", "train.max_steps=2"]).exit_code == 0
    assert cli.invoke(app, ["train", "ts.yaml", *cut, "--resume"]).exit_code == 0
    straight = _train_losses(tmp_path / "runs" / "tiny-ts")
    assert len(straight) == 4 and _train_losses(tmp_path / "cut") == straight
    with pytest.raises(SeqtoolError, match=r"ts.yaml: .*train.quantize: a target-space model stores no weights"):
        load_recipe("ts.yaml", ["train.quantize.weights=8"])
