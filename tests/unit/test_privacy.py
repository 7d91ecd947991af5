"""DP-SGD (train.privacy, seqtool/training/privacy.py; papers.md card 15): the card's independence property
of normalization layers, per-example clipping, epsilon against Opacus's own accountant, a private run
through the CLI that logs epsilon and resumes to the same epsilon, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn

from seqtool.data.batching import poisson_batches
from seqtool.data.classify import ClassifyBatch
from seqtool.models.base import VocabSizes
from seqtool.models.recurrent.classifier import RNNClassifier, RNNClassifierConfig
from seqtool.recipe.schema import PrivacySpec
from seqtool.training.privacy import PrivateTraining
from seqtool.training.trainer import LossModule
from tests.reliability.test_bad_input import invoke

B, T, CLASSES = 5, 6, 3


def example_gradients(model: nn.Module, losses) -> list[torch.Tensor]:
    """d loss_i / d theta for every i of one batched forward ((B, *p.shape) each): what hook-based
    per-sample gradients (Opacus) compute, so it shows whether example i's gradient sees example j."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = losses()
    return torch.autograd.grad(loss, params, grad_outputs=torch.eye(len(loss)), is_grads_batched=True,
                               allow_unused=True, materialize_grads=True)


def mlp(norm: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), norm, nn.Tanh(), nn.Linear(8, CLASSES))


def rnn(norm) -> RNNClassifier:
    torch.manual_seed(0)
    cfg = RNNClassifierConfig(cell={"name": "lstm", "fused": False}, norm=norm, embed_dim=4, hidden_dim=8)
    return RNNClassifier(cfg, VocabSizes(12, CLASSES))


def data(kind: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (B,), generator=g)
    if kind == "mlp":
        return (torch.randn(B, 4, generator=g),), labels
    tokens = torch.randint(4, 12, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 4:] = False  # a padded row
    return (tokens.masked_fill(~mask, 0), mask), labels


def public_statistics(model: nn.Module, kind: str) -> nn.Module:
    """Batch norm fed only by a public batch: running statistics from one forward of public data (momentum
    1), then evaluation mode, so no private example enters any statistic."""
    model.train()
    with torch.no_grad():
        model(*data(kind, seed=99)[0])
    return model.eval()


CASES = {  # name: (kind, model builder, whether example i's gradient must ignore example j)
    "layer norm": ("mlp", lambda: mlp(nn.LayerNorm(8)), True),
    "group norm": ("mlp", lambda: mlp(nn.GroupNorm(2, 8)), True),
    "no norm": ("mlp", lambda: mlp(nn.Identity()), True),
    "public batch norm": ("mlp", lambda: public_statistics(mlp(nn.BatchNorm1d(8, momentum=1.0)), "mlp"), True),
    "batch norm": ("mlp", lambda: mlp(nn.BatchNorm1d(8)), False),
    "lstm layer norm": ("rnn", lambda: rnn("layer"), True),
    "lstm no norm": ("rnn", lambda: rnn("none"), True),
    "lstm public batch norm": ("rnn", lambda: public_statistics(rnn({"name": "batch", "momentum": 1.0}), "rnn"), True),
    "lstm batch norm": ("rnn", lambda: rnn("batch"), False),
}


@pytest.mark.parametrize("case", CASES)
def test_an_examples_gradient_ignores_the_other_examples_except_under_batch_statistics(case):
    """The card's test: change example j of the batch; example i's gradient stays, for per-example norms
    and batch norm fed only by a public batch, and moves for batch norm with batch statistics."""
    kind, build, independent = CASES[case]
    model = build()
    inputs, labels = data(kind, seed=0)
    other = [x.clone() for x in inputs]
    changed, _ = data(kind, seed=1)
    j = B - 1
    for x, y in zip(other, changed):
        x[j] = y[j]
    before, after = (example_gradients(model, lambda x=x: nn.functional.cross_entropy(model(*x), labels,
                                                                                       reduction="none"))
                     for x in (inputs, other))
    moved = max(float((a[:j] - b[:j]).abs().max()) for a, b in zip(before, after))
    assert (moved < 1e-6) == independent, moved
    assert max(float((a[j] - b[j]).abs().max()) for a, b in zip(before, after)) > 1e-4  # j itself moved


def private(model: nn.Module, **spec) -> PrivateTraining:
    settings = PrivacySpec(**{"noise_multiplier": 1.0, **spec})
    return PrivateTraining(settings, LossModule(model), torch.optim.SGD(model.parameters(), lr=0.1), examples=100,
                           batch_size=B, max_steps=50, world=1)


def batch_of(inputs, labels, index=slice(None)):
    tokens, mask = inputs
    return ClassifyBatch(tokens[index], mask[index], labels[index], len(labels[index]))


@pytest.mark.parametrize("vectorized", [True, False])
def test_per_example_gradients_are_those_of_a_batched_pass_for_a_per_example_norm(vectorized):
    """By vmap, and by the loop used for models vmap cannot batch."""
    model = rnn("layer")
    inputs, labels = data("rnn", seed=0)
    engine = private(model)
    engine.vectorized = vectorized
    engine.backward(batch_of(inputs, labels), label_smoothing=0.0)
    batched = example_gradients(model, lambda: nn.functional.cross_entropy(model(*inputs), labels, reduction="none"))
    for p, g in zip(model.parameters(), batched):
        assert torch.allclose(p.grad_sample, g, atol=1e-5)


def test_each_examples_gradient_is_clipped_to_max_grad_norm():
    model = rnn("layer")
    inputs, labels = data("rnn", seed=0)
    engine = private(model, max_grad_norm=1e-3)
    for i in range(B):
        engine.backward(batch_of(inputs, labels, slice(i, i + 1)), label_smoothing=0.0)
        raw = torch.cat([p.grad_sample.flatten() for p in model.parameters()]).norm()
        engine.optimizer.clip_and_accumulate()
        clipped = torch.cat([p.summed_grad.flatten() for p in model.parameters()]).norm()
        assert raw > 1e-2 and clipped == pytest.approx(1e-3, rel=1e-3)
        engine.optimizer.zero_grad()


def test_epsilon_is_opacus_accountants_and_target_epsilon_is_met_at_max_steps():
    engine = private(rnn("none"), noise_multiplier=None, target_epsilon=3.0, delta=1e-5)
    reference = RDPAccountant()
    for _ in range(50):
        engine.stepped()
        reference.step(noise_multiplier=engine.noise, sample_rate=B / 100)
    epsilon = engine.report()["epsilon"]
    assert epsilon == pytest.approx(reference.get_epsilon(1e-5), rel=1e-12)
    assert 2.9 < epsilon <= 3.0


def test_poisson_batches_draw_each_example_at_the_rate():
    batches = poisson_batches(np.random.default_rng(0), 1000, 50)
    sizes = [len(b) for b in batches]
    assert len(batches) == 20 and all(len(set(b)) == len(b) for b in batches)
    assert 40 < np.mean(sizes) < 60 and len(set(sizes)) > 1


# -- through the CLI ---------------------------------------------------------------------------------
TINY = """recipe_version: 1
name: tiny
task: classify
data:
  listops: {min_length: 4, max_length: 12, max_depth: 3, max_args: 3, train: 160, valid: 20, test: 20}
model: {arch: rnn_classifier, cell: lstm, norm: layer, embed_dim: 4, hidden_dim: 8}
train:
  optimizer: {name: sgd, lr: 0.5}
  batch_size: 8
  max_steps: 4
  validate_every: 2
  checkpoint: {every: 2}
  privacy: {noise_multiplier: 1.0, max_grad_norm: 1.0, delta: 1.0e-5}
log: {every: 2, tensorboard: false, progress: none}
"""



def train_lines(path) -> dict[int, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["step"]: r for r in rows if r.get("split") == "train"}


def test_a_private_run_logs_epsilon_and_a_resumed_one_reports_the_same(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    code, out, err = invoke(["train", "tiny.yaml", "--set", "output_dir=straight"], capsys, monkeypatch)
    assert code == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    reference = RDPAccountant()
    for _ in range(4):
        reference.step(noise_multiplier=1.0, sample_rate=8 / 160)
    assert final["epsilon"] == pytest.approx(reference.get_epsilon(1e-5), rel=1e-12)
    straight = train_lines(tmp_path / "straight" / "metrics.jsonl")
    assert set(straight) == {2, 4} and straight[4]["epsilon"] == final["epsilon"] > straight[2]["epsilon"] > 0

    assert invoke(["train", "tiny.yaml", "--set", "output_dir=split", "--set", "train.max_steps=2"],
                  capsys, monkeypatch)[0] == 0
    code, out, err = invoke(["train", "tiny.yaml", "--set", "output_dir=split", "--resume"], capsys, monkeypatch)
    assert code == 0, err
    resumed = train_lines(tmp_path / "split" / "metrics.jsonl")
    assert json.loads(out.strip().splitlines()[-1])["epsilon"] == final["epsilon"]
    for key in ("epsilon", "loss"):  # the same noise, the same accountant history
        assert resumed[4][key] == straight[4][key]


@pytest.mark.parametrize(("change", "names"), [
    (["model.norm=batch"], "rnn.layers.0.norm_x"),
    (["train.accumulate=2"], "train.accumulate"),
    (["train.privacy.target_epsilon=1"], "exactly one of noise_multiplier and target_epsilon"),
])
def test_settings_that_break_the_guarantee_are_refused_in_one_line(change, names, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    sets = [arg for item in change for arg in ("--set", item)]
    code, _, err = invoke(["train", "tiny.yaml", *sets], capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("prepare")]
    assert code == 2 and len(lines) == 1 and names in lines[0], err


def test_a_stream_task_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lm.yaml").write_text("""recipe_version: 1
name: lm
task: lm
data: {train: {text: train.txt}}
model: {arch: rnnlm}
train: {privacy: {noise_multiplier: 1.0}}
""", encoding="utf-8")
    code, _, err = invoke(["check", "lm.yaml"], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "task 'lm' does not draw its batches as Poisson-sampled" in err
