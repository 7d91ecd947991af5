"""Recurrent cells: the time loop equals torch's fused kernels, step-wise running equals a full pass, the
paper forms match their equations, NC-GRU stays orthogonal, the ARMA cell recovers an ARMA process."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seqtool.data.sequences import arma_task
from seqtool.models.recurrent.layers import Recurrent
from seqtool.models.recurrent.orthogonal import NCGRUCell
from seqtool.models.recurrent.state_reg import StateRegularizedCell

CELLS = ["rnn", "gru", "lstm", "gru_chung", "lstm_peephole", "ncgru", "arma", "sr_gru", "sr_lstm"]


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_time_loop_equals_fused_kernel(kind):
    torch.manual_seed(0)
    fused = Recurrent(kind, 5, 7, 2)
    loop = Recurrent({"name": kind, "fused": False}, 5, 7, 2)
    assert fused.fused and not loop.fused
    for torch_layer, cell in zip(fused.layers, loop.layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(torch_layer, f"{name}_l0").data)
    x = torch.randn(3, 11, 5, requires_grad=True)
    out_f, state_f = fused(x)
    out_l, state_l = loop(x)
    torch.testing.assert_close(out_l, out_f, atol=1e-6, rtol=1e-5)
    for a, b in zip(state_f, state_l):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
    grad_f = torch.autograd.grad(out_f.square().sum(), x)[0]
    grad_l = torch.autograd.grad(out_l.square().sum(), x)[0]
    torch.testing.assert_close(grad_l, grad_f, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("norm", ["none", "layer", "recurrent_batch", {"name": "atn", "window": 3}])
def test_stepwise_equals_full_pass(cell, norm):
    if norm != "none" and cell in ("ncgru", "arma", "sr_gru", "sr_lstm"):
        pytest.skip("this cell takes no norm")
    torch.manual_seed(1)
    rnn = Recurrent(cell, 4, 8, 2, norm=norm)
    x = torch.randn(3, 9, 4)
    rnn(x)[0].sum().backward()  # a training pass first: running statistics and NC-GRU state move
    rnn.eval()
    full, final = rnn(x)
    state, steps = None, []
    for t in range(9):
        out, state = rnn(x[:, t : t + 1], state)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(state[0], final[0])


def test_chung_gru_follows_its_equations():
    torch.manual_seed(2)
    rnn = Recurrent("gru_chung", 3, 4)
    cell = rnn.layers[0]
    x, H = torch.randn(2, 1, 3), 4
    h0 = torch.randn(2, 1, 4)
    out = rnn(x, rnn.initial_state(h0))[0][:, 0]
    W, b = cell.weight_ih, cell.bias_ih + torch.cat([cell.bias_hh, torch.zeros(H)])
    xw, h = x[:, 0] @ W.t() + b, h0[:, 0]
    z = torch.sigmoid(xw[:, :H] + h @ cell.weight_hh[:H].t())
    r = torch.sigmoid(xw[:, H : 2 * H] + h @ cell.weight_hh[H:].t())
    candidate = torch.tanh(xw[:, 2 * H :] + (r * h) @ cell.weight_hn.t())
    torch.testing.assert_close(out, (1 - z) * h + z * candidate)


def test_peephole_lstm_follows_its_equations():
    torch.manual_seed(3)
    rnn = Recurrent("lstm_peephole", 3, 4)
    cell = rnn.layers[0]
    x, h, c = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    out, state = rnn(x.unsqueeze(1), (h.unsqueeze(1), c.unsqueeze(1)))
    gates = x @ cell.weight_ih.t() + h @ cell.weight_hh.t() + cell.bias_ih + cell.bias_hh
    i, f, g, o = gates.chunk(4, 1)
    v_i, v_f, v_o = cell.peephole
    c_new = torch.sigmoid(f + v_f * c) * c + torch.sigmoid(i + v_i * c) * torch.tanh(g)
    h_new = torch.sigmoid(o + v_o * c_new) * torch.tanh(c_new)
    torch.testing.assert_close(state[1][:, 0], c_new)
    torch.testing.assert_close(out[:, 0], h_new)


def test_ncgru_cayley_gradient_and_orthogonality_through_training():
    torch.manual_seed(4)
    rnn = Recurrent({"name": "ncgru", "refresh_every": 49}, 3, 16)
    cell: NCGRUCell = rnn.layers[0]
    start = cell.A.detach().clone()
    # the custom backward equals differentiating the exact Cayley transform
    A = cell.A.detach().clone().requires_grad_(True)
    eye = torch.eye(16)
    U = torch.linalg.solve(eye + A, eye - A) * cell.signs
    G = torch.randn(16, 16)
    (U * G).sum().backward()
    skew = A.grad - A.grad.t()  # the gradient on the skew-symmetric manifold: A stays skew
    x = torch.randn(8, 12, 3)
    U_pass = cell.project(x, 0, {}, None)[1]["recurrent"][:, 32:].t()  # [U_r; U_u; U_c]^T, H = 16
    direct = torch.autograd.grad((U_pass * G).sum(), cell.A)[0]
    torch.testing.assert_close(direct, skew, atol=1e-4, rtol=1e-4)
    optimizer = torch.optim.Adam(rnn.parameters(), lr=1e-2)
    worst = 0.0
    for _ in range(60):  # more than one exact refresh apart
        optimizer.zero_grad()
        rnn(x)[0].square().mean().backward()
        optimizer.step()
        cell.refresh()
        worst = max(worst, cell.orthogonality_error())
    assert worst < 1e-3
    torch.testing.assert_close(cell.A.detach(), -cell.A.detach().t())  # still skew-symmetric
    assert (cell.A.detach() - start).abs().max() > 0.05  # and it did move


def test_arma_cell_recovers_a_simulated_process():
    """ARMA(2, 2) with AR (0.1, 0.3), MA (-0.4, -0.2), noise 2 (card 13), 120k predicted values in short
    windows: a linear one-unit cell fitted by least squares has the coefficients within 0.05."""
    torch.manual_seed(5)
    n, length = 4000, 40
    examples = arma_task(np.random.default_rng(0), n, length=length, ar=[0.1, 0.3], ma=[-0.4, -0.2], noise=2.0)
    x, y = (torch.from_numpy(np.asarray(a)).view(n, length, 1) for a in (examples.inputs, examples.targets))
    w = torch.from_numpy(np.asarray(examples.weight)).view(n, length)
    rnn = Recurrent({"name": "arma", "p": 2, "q": 2, "activation": "linear", "bias": False}, 1, 1)
    optimizer = torch.optim.LBFGS(rnn.parameters(), max_iter=30, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = (rnn(x)[0] - y).square()[w].mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    got = rnn.layers[0].describe()
    want = {"ar_1": 0.1, "ar_2": 0.3, "ma_1": -0.4, "ma_2": -0.2}
    assert all(abs(got[k] - v) < 0.05 for k, v in want.items()), got


def test_state_regularized_states_are_centroids_in_evaluation():
    torch.manual_seed(6)
    rnn = Recurrent({"name": "sr_gru", "centroids": 5}, 3, 6).eval()
    cell: StateRegularizedCell = rnn.layers[0]
    out = rnn(torch.randn(4, 7, 3))[0]
    nearest = cell.centroids[cell.assign(out)]
    torch.testing.assert_close(out, nearest)
    rnn.train()
    soft = rnn(torch.randn(4, 7, 3))[0]
    assert not torch.allclose(soft, cell.centroids[cell.assign(soft)])  # a mixture while training


def test_straight_through_trains_the_snapped_states_with_the_soft_gradient():
    torch.manual_seed(6)
    rnn = Recurrent({"name": "sr_gru", "centroids": 5, "straight_through": True}, 3, 6)
    cell: StateRegularizedCell = rnn.layers[0]
    x = torch.randn(4, 7, 3)
    out = rnn(x)[0]
    torch.testing.assert_close(out, cell.centroids[cell.assign(out)])  # training sees centroids too
    out.square().sum().backward()
    assert cell.base.weight_hh.grad.abs().sum() > 0 and cell.centroids.grad.abs().sum() > 0
    torch.testing.assert_close(rnn.eval()(x)[0], out.detach())  # and evaluation is the same network


def test_state_regularized_temperature_anneals_per_training_batch():
    cfg = {"name": "sr_gru", "temperature": 1.0, "final_temperature": 0.1, "anneal_steps": 4}
    rnn = Recurrent(cfg, 3, 6)
    cell: StateRegularizedCell = rnn.layers[0]
    seen = []
    for _ in range(6):
        seen.append(cell.temperature)
        rnn(torch.randn(2, 5, 3))
    assert seen == pytest.approx([1.0, 0.1 ** 0.25, 0.1 ** 0.5, 0.1 ** 0.75, 0.1, 0.1])
    rnn.eval()
    rnn(torch.randn(2, 5, 3))
    assert cell.temperature == pytest.approx(0.1) and int(cell.batches) == 6  # evaluation does not count
    copy = Recurrent(cfg, 3, 6)
    copy.load_state_dict(rnn.state_dict())
    assert copy.layers[0].temperature == pytest.approx(0.1)  # a resumed run continues the anneal


def test_bad_cells_fail_clearly():
    with pytest.raises(ValueError, match="did you mean 'lstm'"):
        Recurrent("lstn", 3, 4)
    with pytest.raises(ValueError, match="takes no norm"):
        Recurrent("ncgru", 3, 4, norm="layer")
    with pytest.raises(ValueError, match="multiple of its input size"):
        Recurrent("arma", 3, 4)
    with pytest.raises(ValueError, match="cell 'arma': p"):
        Recurrent({"name": "arma", "p": 0}, 1, 1)


def test_time_loop_learns_copy_faster_than_chance():
    """A short learning check on the time-loop path (LSTM with layer norm): the loss falls."""
    torch.manual_seed(7)
    rnn, out = Recurrent("lstm", 3, 16, norm="layer"), torch.nn.Linear(16, 3)
    optimizer = torch.optim.Adam([*rnn.parameters(), *out.parameters()], lr=0.02)
    x = torch.randint(0, 3, (32, 6))
    inputs = torch.nn.functional.one_hot(x, 3).float()
    losses = []
    for _ in range(60):  # predict the previous symbol
        optimizer.zero_grad()
        logits = out(rnn(inputs)[0])[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), x[:, :-1].reshape(-1))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 0.9 * math.log(3) and losses[-1] < 0.2
