"""S5 (papers.md card 11): the parallel scan equals the sequential recurrence, step-wise generation equals
the scan, ZOH and HiPPO-N are what the paper defines, an LM's carried state equals one long pass, the
classifier ignores padding."""

import cmath
import math

import pytest
import torch

from seqtool.data.batching import LMBatch
from seqtool.models.base import VocabSizes
from seqtool.models.state_space.s5 import (
    S5LM,
    S5SSM,
    S5Classifier,
    S5ClassifierConfig,
    S5LMConfig,
    S5Sequence,
    S5SequenceConfig,
    discretize_zoh,
    hippo_n,
)
from seqtool.models.state_space.scan import linear_scan

SMALL = dict(d_model=16, state_dim=8, blocks=2, layers=2)


def sequential(a, b, start):
    """The recurrence one step at a time, in complex128."""
    x, states = start.to(torch.complex128), []
    for k in range(b.size(-2)):
        x = a.to(torch.complex128) * x + b[..., k, :].to(torch.complex128)
        states.append(x)
    return torch.stack(states, -2)


@pytest.mark.parametrize("steps", [1, 2, 7, 1000])
def test_scan_equals_the_sequential_recurrence(steps):
    torch.manual_seed(0)
    # HiPPO-N eigenvalues discretized with the initial steps: |a| from 0.95 to 0.9995, so 1,000 steps keep memory
    a, _ = discretize_zoh(hippo_n(16)[0][:8].to(torch.complex64), torch.ones(8, 1), torch.logspace(-3, -1, 8))
    b = torch.randn(3, steps, 8, dtype=torch.complex64)
    start = torch.randn(3, 8, dtype=torch.complex64)
    reference = sequential(a, b, start)
    error = (linear_scan(a, b, start).to(torch.complex128) - reference).abs().max()
    assert error <= 1e-5 * max(1.0, reference.abs().max().item())


def test_ssm_layer_equals_the_recurrence_it_defines():
    torch.manual_seed(0)
    ssm = S5SSM(S5SequenceConfig(**SMALL), bidirectional=True)
    u = torch.randn(2, 50, 16)
    lam_bar, b_bar = (t.detach().to(torch.complex128) for t in ssm.discrete())
    bu = u.double().to(torch.complex128) @ b_bar.T
    zero = torch.zeros(2, 4, dtype=torch.complex128)
    forward, backward = sequential(lam_bar, bu, zero), sequential(lam_bar, bu.flip(1), zero).flip(1)
    c = [torch.view_as_complex(p.detach()).to(torch.complex128) for p in ssm.c]
    expected = 2 * (forward @ c[0].T).real + 2 * (backward @ c[1].T).real + ssm.d.detach().double() * u.double()
    y, last = ssm(u)
    assert torch.allclose(y.double(), expected, atol=1e-5)
    assert torch.allclose(last.to(torch.complex128), forward[:, -1], atol=1e-5)


def test_zoh_matches_a_hand_computation_and_the_ode():
    lam, b, step = complex(-0.5, 2.0), complex(1.0, -1.0), 0.1
    c128 = torch.complex128
    lam_bar, b_bar = discretize_zoh(torch.tensor([lam], dtype=c128), torch.tensor([[b]], dtype=c128),
                                    torch.tensor([step], dtype=torch.float64))
    by_hand = math.exp(-0.05) * complex(math.cos(0.2), math.sin(0.2))
    assert abs(lam_bar.item() - by_hand) < 1e-12
    assert abs(b_bar.item() - (by_hand - 1) / lam * b) < 1e-12
    # exact for an input held over the step: x(Δ) of x' = λx + b·u from x(0) = x0, by RK4 in 1,000 sub-steps
    x, x0, u, h = 0.3 - 0.2j, 0.3 - 0.2j, 0.7, step / 1000
    f = lambda v: lam * v + b * u  # noqa: E731
    for _ in range(1000):
        k1 = f(x)
        k2 = f(x + h / 2 * k1)
        k3 = f(x + h / 2 * k2)
        x += h / 6 * (k1 + 2 * k2 + 2 * k3 + f(x + h * k3))
    assert abs(lam_bar.item() * x0 + b_bar.item() * u - x) < 1e-10
    assert cmath.isclose(lam_bar.item(), cmath.exp(lam * step))


def test_hippo_n_is_the_normal_part_of_legs_diagonalized():
    n = 8
    legs = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for k in range(n):
            legs[i, k] = -math.sqrt((2 * i + 1) * (2 * k + 1)) if i > k else -(i + 1) if i == k else 0.0
    p = torch.tensor([math.sqrt(i + 0.5) for i in range(n)], dtype=torch.float64)
    s = legs + torch.outer(p, p)
    lam, v = hippo_n(n)
    assert torch.allclose(lam.real, torch.full((n,), -0.5, dtype=torch.float64))  # the mean of diag S
    assert torch.allclose(v.conj().T @ v, torch.eye(n, dtype=torch.complex128), atol=1e-10)
    assert torch.allclose(v @ torch.diag(lam) @ v.conj().T, s.to(torch.complex128), atol=1e-10)
    # conjugate symmetry: the kept first half's conjugates are the second half
    assert torch.allclose(lam[: n // 2].conj().imag.sort().values, lam[n // 2 :].imag)
    ssm = S5SSM(S5SequenceConfig(d_model=4, state_dim=2 * n, blocks=2))  # two blocks of n: Λ tiled
    assert torch.allclose(ssm.lambda_im.double(), lam[: n // 2].imag.repeat(2), atol=1e-6)
    assert torch.all(ssm.lambda_re == -0.5)
    steps = ssm.log_step.exp()
    assert steps.min() >= 0.001 and steps.max() <= 0.1


@pytest.fixture(scope="module", params=[dict(tie_embeddings=True), dict(adaptive_softmax={"cutoffs": [10, 20]})],
                ids=["tied", "adaptive"])
def lm(request):
    torch.manual_seed(0)
    return S5LM(S5LMConfig(**SMALL, clip_eigs=True, **request.param), 30).eval()


def test_stepwise_generation_equals_the_scan(lm):
    prompt = torch.randint(4, 30, (2, 5))
    with torch.no_grad():
        features, state = lm(prompt)
        log_probs = [lm.log_probs(features[:, -1])]
        tokens = [log_probs[-1].argmax(-1)]
        for _ in range(12):
            step_log_probs, state = lm.step(tokens[-1], state)
            log_probs.append(step_log_probs)
            tokens.append(step_log_probs.argmax(-1))
        whole, _ = lm(torch.cat([prompt, torch.stack(tokens[:-1], 1)], 1))
    scanned = lm.log_probs(whole[:, 4:].reshape(-1, 16)).view(2, 13, 30)
    assert torch.allclose(torch.stack(log_probs, 1), scanned, atol=1e-5)


def test_lm_batches_with_carried_state_equal_one_long_pass(lm):
    stream = torch.randint(4, 30, (3, 31))
    inputs, targets = stream[:, :-1], stream[:, 1:]
    with torch.no_grad():
        whole = lm.loss(LMBatch(inputs, targets, targets.numel(), True)).nll
        total, state = 0.0, torch.zeros(3, 4)  # a stale state that `first` must discard
        for i, (lo, hi) in enumerate([(0, 7), (7, 8), (8, 30)]):
            out = lm.loss(LMBatch(inputs[:, lo:hi], targets[:, lo:hi], 3 * (hi - lo), i == 0), state=state)
            total, state = total + out.nll, out.state
    assert torch.allclose(total, whole, rtol=1e-5)


def test_sequence_model_is_causal_and_every_parameter_learns():
    torch.manual_seed(0)
    model = S5Sequence(S5SequenceConfig(**SMALL, prenorm=True), VocabSizes(2, 1))
    x = torch.randn(2, 20, 2)
    changed = x.clone()
    changed[:, 12:] = torch.randn(2, 8, 2)
    batch = type("Batch", (), {"inputs": x})
    out = model.outputs(batch)
    assert torch.allclose(out[:, :12], model.outputs(type("Batch", (), {"inputs": changed}))[:, :12], atol=1e-6)
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_classifier_keeps_its_contract_and_ignores_padding():
    torch.manual_seed(0)
    model = S5Classifier(S5ClassifierConfig(**SMALL), VocabSizes(20, 10)).eval()
    tokens = torch.randint(4, 20, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 6:], mask[2, 3:] = False, False
    tokens[~mask] = 0
    logits = model(tokens, mask)
    assert logits.shape == (3, 10)
    for row, length in ((1, 6), (2, 3)):
        alone = model(tokens[row : row + 1, :length], mask[row : row + 1, :length])
        assert torch.allclose(logits[row : row + 1], alone, atol=1e-5)
    batch = type("Batch", (), {"tokens": tokens, "mask": mask, "labels": torch.tensor([1, 2, 3])})
    out = model.loss(batch)
    assert out.ntokens == 3 and torch.isfinite(out.loss)


@pytest.mark.parametrize("changes", [dict(state_dim=6, blocks=2), dict(state_dim=7), dict(dt_min=0.5)])
def test_sizes_that_do_not_fit_fail_at_load(changes):
    with pytest.raises(ValueError):
        S5SequenceConfig(**{**SMALL, **changes})
