"""The RNS-RNN (papers.md card 7): Lang's dynamic program against brute-force enumeration of the pushdown
automaton's runs, log space against probability space, the limited version against the full one, and the
model through the trainer and the CLI on a context-free language task."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from seqtool.cli import app
from seqtool.models.base import VocabSizes
from seqtool.models.recurrent.rns import RNSRNN, NondeterministicStack, RNSRNNConfig

B, Q, S = 2, 2, 2


def actions(steps: int, scale: float = 1.0, states: int = Q, symbols: int = S, seed: int = 0) -> list[tuple]:
    """Random log-weights of push, repl (B, Q, S, Q, S) and pop (B, Q, S, Q) for each step, float64."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(B, states, symbols, states, symbols)] * 2 + [(B, states, symbols, states)]
    return [tuple(torch.randn(s, generator=g, dtype=torch.float64) * scale for s in shapes) for _ in range(steps)]


def enumerate_runs(weights: list[tuple], b: int, window: int | None) -> torch.Tensor:
    """alpha[t][r, y]: the summed weight of every run of the automaton from (q0, [⊥]) over the steps, ending in
    state r with y on top. A stack entry is (symbol, step it was pushed from; -1 for ⊥); pop never takes ⊥. With
    a window, a run counts only while its top was pushed at most `window` steps ago."""
    runs = {(0, ((0, -1),)): 1.0}
    for t, (push, repl, pop) in enumerate(weights, 1):
        after = {}
        for (q, stack), w in runs.items():
            x, pushed = stack[-1]
            moves = [((r, stack + ((y, t - 1),)), push[b, q, x, r, y]) for r in range(Q) for y in range(S)]
            moves += [((r, stack[:-1] + ((y, pushed),)), repl[b, q, x, r, y]) for r in range(Q) for y in range(S)]
            moves += [((r, stack[:-1]), pop[b, q, x, r]) for r in range(Q) if len(stack) > 1]
            for key, weight in moves:
                if window is None or t - key[1][-1][1] <= window:
                    after[key] = after.get(key, 0.0) + w * float(weight.exp())
        runs = after
    alpha = torch.zeros(Q, S, dtype=torch.float64)
    for (r, stack), w in runs.items():
        alpha[r, stack[-1][0]] += w
    return alpha


def lang_in_probabilities(weights: list[tuple]) -> list[torch.Tensor]:
    """Lang's algorithm as the card writes it, on probabilities (float64, no renormalizing): alpha[t] for
    t = 1..n from gamma[i -> t] for i = -1..t-1 (list index i + 1)."""
    push, repl, pop = zip(*[tuple(w.exp() for w in step) for step in weights])
    Qs, Ss = pop[0].shape[1:3]
    start, bottom = torch.zeros(B, Qs, Ss, dtype=torch.float64), torch.zeros(B, Qs, Ss, Qs, Ss, dtype=torch.float64)
    start[:, 0, 0] = bottom[:, 0, 0, 0, 0] = 1.0
    gamma, alphas = {(-1, 0): bottom}, {-1: start, 0: start}
    for t in range(1, len(weights) + 1):
        gamma[t - 1, t] = push[t - 1]
        for i in range(-1, t - 1):
            g = torch.einsum("bqxsz,bszry->bqxry", gamma[i, t - 1], repl[t - 1])
            for k in range(i + 1, t - 1):
                g = g + torch.einsum("bqxuy,buysz,bszr->bqxry", gamma[i, k], gamma[k, t - 1], pop[t - 1])
            gamma[i, t] = g
        alphas[t] = sum(torch.einsum("bqx,bqxry->bry", alphas[i], gamma[i, t]) for i in range(-1, t))
    return [alphas[t] for t in range(1, len(weights) + 1)]


def run_stack(weights: list[tuple], window: int | None = None, dtype=torch.float64):
    """The model's stack over the steps: per step alpha[t] (probabilities, float64, not normalized)."""
    stack = NondeterministicStack(B, *weights[0][2].shape[1:3], window=window, dtype=dtype)
    log_z, out = torch.zeros(B, dtype=torch.float64), []
    for step in weights:
        log_z = log_z + stack.update(*(w.to(dtype) for w in step)).double()
        out.append(stack.alpha().double().exp() * log_z.exp()[:, None, None])
    return out


@pytest.mark.parametrize("window", [None, 1, 2, 3])
def test_lang_algorithm_equals_brute_force_over_all_runs(window):
    """Exhaustive: every run of a 2-state, 2-symbol automaton over 4 steps (10 actions a step), also with a
    window (the limited version), and the card's equations on probabilities without one."""
    weights = actions(4)
    if window is None:
        for alpha, exact in zip(run_stack(weights), lang_in_probabilities(weights)):
            assert torch.allclose(alpha, exact, rtol=1e-10, atol=0)
    for t, alpha in enumerate(run_stack(weights, window), 1):
        for b in range(B):
            assert torch.allclose(alpha[b], enumerate_runs(weights[:t], b, window), rtol=1e-10, atol=0)


def test_log_space_equals_probability_space_even_with_large_weights():
    """The model's float32 log-space stack against the card's equations on probabilities in float64, over 12
    steps of a 2-state, 3-symbol automaton, with logits of scale 1 and 30 (weights up to e^100)."""
    for scale in (1.0, 30.0):
        weights = actions(12, scale, symbols=3, seed=1)
        for alpha, exact in zip(run_stack(weights, dtype=torch.float32), lang_in_probabilities(weights)):
            assert torch.allclose(alpha, exact, rtol=1e-4, atol=0)


def test_limited_version_with_window_at_least_n_is_the_full_one():
    model = RNSRNN(RNSRNNConfig(hidden_dim=6, states=2, stack_symbols=3), VocabSizes(4, 4))
    limited = RNSRNN(RNSRNNConfig(hidden_dim=6, states=2, stack_symbols=3, window=12), VocabSizes(4, 4))
    limited.load_state_dict(model.state_dict())
    x = torch.eye(4)[torch.randint(0, 4, (3, 12), generator=torch.Generator().manual_seed(0))]
    full, cut = model.out(model(x)), limited.out(limited(x))
    assert torch.equal(full, cut)
    full.sum().backward()
    cut.sum().backward()
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(model.parameters(), limited.parameters()))
    narrow = RNSRNN(RNSRNNConfig(hidden_dim=6, states=2, stack_symbols=3, window=3), VocabSizes(4, 4))
    narrow.load_state_dict(model.state_dict())
    assert not torch.allclose(narrow.out(narrow(x)), full)  # a window below n drops runs


def test_gradients_of_the_stack_are_exact():
    """gradcheck over 3 steps, the first with a pop term, of one automaton (60 weights)."""
    weights = [tuple(w[:1].requires_grad_() for w in step) for step in actions(3, seed=2)]

    def reading(*flat):
        stack = NondeterministicStack(1, Q, S, dtype=torch.float64)
        for i in range(0, len(flat), 3):
            stack.update(*flat[i:i + 3])
        return stack.reading()

    assert torch.autograd.gradcheck(reading, [w for step in weights for w in step], fast_mode=True)


RECIPE = """
name: tiny-rns
task: synthetic
data:
  synthetic: {kind: cfl, language: marked_reversal, symbols: 2, train: 64, valid: 8, test: 8, train_lengths: [3, 9],
              test_lengths: [11, 13]}
model: {arch: rns_rnn, hidden_dim: 8, states: 2, stack_symbols: 3}
train: {optimizer: {lr: 0.01}, batch_size: 8, max_steps: 4, validate_every: 2, checkpoint: {every: 2, keep_last: 2}}
log: {tensorboard: false, progress: none, every: 1}
"""


def _train_losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").open()) if r["split"] == "train"}


def test_trains_resumes_exactly_and_evaluates_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rns.yaml").write_text(RECIPE, encoding="utf-8")
    cli = CliRunner()
    assert cli.invoke(app, ["train", "rns.yaml"]).exit_code == 0
    cut = ["--set", "output_dir=cut"]
    assert cli.invoke(app, ["train", "rns.yaml", *cut, "--set", "train.max_steps=2"]).exit_code == 0
    assert cli.invoke(app, ["train", "rns.yaml", *cut, "--resume"]).exit_code == 0
    assert _train_losses(tmp_path / "cut") == _train_losses(tmp_path / "runs" / "tiny-rns")
    done = cli.invoke(app, ["eval", "--checkpoint", "cut", "--split", "test", "--json"])
    result = json.loads(done.stdout)
    assert done.exit_code == 0 and result["gap"] == pytest.approx(result["loss"] - result["min_loss"])
    assert 0 < result["min_loss"] < result["loss"] and 0 <= result["accuracy"] <= 1
