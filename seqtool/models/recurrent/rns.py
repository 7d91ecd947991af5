"""Renormalizing Nondeterministic Stack RNN (RNS-RNN; DuSell and Chiang, "Learning Hierarchical Structures
with Differentiable Nondeterministic Stacks", ICLR 2022; papers.md card 7) for the sequence tasks.

An LSTM controller reads [x_t; r_{t-1}]. From its state h_t one linear layer gives the log-weights of every
transition of a pushdown automaton with Q states and stack alphabet S (symbol 0 is also the bottom, ⊥):
    push  (q, x) -> (r, y)   y pushed on x        repl  (q, x) -> (r, y)   x replaced by y
    pop   (q, x) -> r        x popped
The weights are exp(logits), not normalized per (q, x) (the renormalizing form; the NS-RNN log_softmaxes).
Lang's algorithm sums over every run of the automaton. gamma[i -> t][q, x -> r, y] is the weight of the runs
that push a symbol on x at step i + 1 that is y, on top, at step t, never popping below it:
    gamma[t-1 -> t][q,x -> r,y] = push_t[q,x -> r,y]
    gamma[i -> t][q,x -> r,y]   = sum_{s,z} gamma[i -> t-1][q,x -> s,z] repl_t[s,z -> r,y]
                                  + sum_{k=i+1}^{t-2} sum_{u,s,z} gamma[i -> k][q,x -> u,y]
                                                                  gamma[k -> t-1][u,y -> s,z] pop_t[s,z -> r]
    alpha[t][r,y] = sum_{i=-1}^{t-1} sum_{q,x} alpha[i][q,x] gamma[i -> t][q,x -> r,y]
from gamma[-1 -> 0][q0,⊥ -> q0,⊥] = alpha[-1][q0,⊥] = alpha[0][q0,⊥] = 1 (so ⊥ is never popped). The
reading is r_t[(r, y)] = alpha[t][r, y] / sum alpha[t], Q*S wide (the RNS-RNN reads the state too), and the
output o_t = W h_t + b. The actions of h_t make alpha[t + 1], read at step t + 1.

Computation: log space, renormalized at every step: with Z_t = sum alpha[t] the stored values are
log(alpha[t] / Z_t) (the log reading) and log(gamma[i -> t] Z_i / Z_t). Every term of each sum above spans
the same steps, so the Z's cancel: the same algorithm with numbers that stay bounded. A sum of products is
a matmul of exponentials shifted so that nothing a destination receives is lost (log_matmul; the pop term
through fractions of alpha, NondeterministicStack), in float64: against the card's equations on
probabilities the float32 model agrees to 1e-4 with logits of scale 30 (tests/unit/test_rns.py), and in
development against a logsumexp of every term, computed apart, to 3e-5 of the reading at scale 300.
Cost per string of length n: O(n^3 Q^3 S^2) time (the pop term), and autograd keeps the O(n^3) terms.
Limited version (`window: D`): only gamma[i -> t] with t - i <= D and alpha over those i, so O(n D^2):
a run whose top symbol was pushed more than D steps ago drops out (D >= n is the full algorithm).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from seqtool.models.base import LossOut, SequenceModel, VocabSizes
from seqtool.models.config import ModelConfig
from seqtool.models.losses import objective_loss
from seqtool.models.recurrent.rnn import init_uniform
from seqtool.registry import MODELS

LOG_ZERO = -1e30  # log 0 kept finite: -inf would turn a row of zeros into NaN gradients
LOG_FLOOR = -1e4  # a log reading below this is taken as this when it only shifts a product's scale


def log_matmul(a: torch.Tensor, b: torch.Tensor, middle: torch.Tensor) -> torch.Tensor:
    """log(exp(a) @ exp(b)) for (..., M, K) and (..., K, N) log weights, as one matmul in float64.

    `middle` (..., K), the log reading of the contracted index, moves from a to b first (the product does
    not change): a's entries are then at most minus the log reading of their source and b's at most what
    their destination receives, so shifting each row of a and column of b by its maximum (a constant for
    the gradient) drops only terms far below what their destination receives. Shifting by the raw maxima
    instead would misplace the scale whenever they lie at different k (an improbable state's large
    weight). float64 keeps terms down to e^-708 of the shifts: in float32 (e^-87) the readings drifted
    by 0.5 from an exact logsumexp on random logits of scale 100; float64 stays within 1e-4 at scale 300."""
    dtype, middle = a.dtype, middle.detach().double().clamp_min(LOG_FLOOR)
    a, b = a.double() - middle[..., None, :], b.double() + middle[..., :, None]
    row, col = a.detach().amax(-1, keepdim=True), b.detach().amax(-2, keepdim=True)
    product = torch.matmul((a - row).exp(), (b - col).exp())
    return (product.clamp_min(torch.finfo(product.dtype).tiny).log() + row + col).to(dtype)


class NondeterministicStack:
    """Lang's algorithm in log space, one step at a time, for a batch of B runs of a PDA (Q states, S stack
    symbols), renormalized at every step (see the module notes).

    A column holds g[i -> t][q,x -> r,y] = log(gamma[i -> t] Z_i / Z_t) as (B, W, Q, S, Q, S) for
    i = lo_t .. t-1, lo_t = max(-1, t - window); `alphas` the log readings log(alpha[i] / Z_i). The pop term
    reads every gamma[i -> k], lo <= i < k <= t-2, at every step; they are kept as the fractions
    F = alpha[i] gamma[i -> k] / alpha[k] in [0, 1] (the share of (u, y) at k that comes from (q, x) at i;
    float64, zero where k <= i), laid out (B, y, i, q, x, k, u), so that the pop term is one matmul over
    (k, u) batched over (b, y) and the exponentials of a growing triangle are taken once, not every step."""

    def __init__(self, batch: int, states: int, symbols: int, *, window: int | None = None,
                 dtype=torch.float32, device=None):
        self.Q, self.S, self.window = states, symbols, window
        start = torch.full((batch, states, symbols), LOG_ZERO, dtype=dtype, device=device)
        start[:, 0, 0] = 0.0
        bottom = torch.full((batch, 1, states, symbols, states, symbols), LOG_ZERO, dtype=dtype, device=device)
        bottom[:, 0, 0, 0, 0, 0] = 0.0  # gamma[-1 -> 0]: the pretend push of ⊥
        self.alphas = [start, start]  # alpha[-1], alpha[0]; later alpha[i] for the i a next step reads
        self.cols = [bottom]  # g[. -> t-1] and g[. -> t]
        self.tri = None
        self.t = 0

    def _lo(self, t: int) -> int:
        return -1 if self.window is None else max(-1, t - self.window)

    def reading(self) -> torch.Tensor:
        """(B, Q*S) the distribution over (state, top symbol) after the last update."""
        return self.alphas[-1].exp().flatten(1)

    def alpha(self) -> torch.Tensor:
        """(B, Q, S) log alpha[t], normalized to sum one."""
        return self.alphas[-1]

    def update(self, push: torch.Tensor, repl: torch.Tensor, pop: torch.Tensor) -> torch.Tensor:
        """One step from the log-weights push, repl (B, Q, S, Q, S) and pop (B, Q, S, Q); returns
        log Z_t / Z_{t-1}, the log total of the new alpha before renormalizing."""
        t = self.t + 1
        lo, last = self._lo(t), self.alphas[-1].flatten(1)  # log alpha[t-1]
        prev = self.cols[-1][:, lo - self._lo(t - 1):]  # g[i -> t-1], i = lo .. t-2
        col = log_matmul(prev.flatten(1, 3).flatten(-2), repl.flatten(1, 2).flatten(-2), last).view(prev.shape)
        if t - 2 > lo:
            self._grow_tri(lo, t)
            done = log_matmul(prev[:, 1:].flatten(1, 3).flatten(-2), pop.flatten(1, 2), last)  # (b, k u y, r)
            col = torch.cat([torch.logaddexp(col[:, :-1], self._popped(lo, t, done)), col[:, -1:]], 1)
        col = torch.cat([col, push[:, None]], 1)
        alphas = torch.stack(self.alphas[lo - t:], 1)  # log alpha[i], i = lo .. t-1
        alpha = torch.logsumexp(alphas[..., None, None] + col, (1, 2, 3))
        scale = torch.logsumexp(alpha, (1, 2))
        self.alphas.append(alpha - scale[:, None, None])
        self.cols = [self.cols[-1], col - scale[:, None, None, None, None, None]]
        if self.window is not None:  # alpha[i] for i < lo_{t+1} is never read again
            del self.alphas[: -self.window]
        self.t = t
        return scale

    def _sources(self, lo: int, t: int, last: int) -> torch.Tensor:
        """log alpha[i] for i = lo .. last, floored (they only set a scale), float64 (B, I, Q, S)."""
        at = len(self.alphas) - t  # the list index of alpha[0]
        return torch.stack(self.alphas[at + lo: at + last + 1], 1).double().clamp_min(LOG_FLOOR)

    def _popped(self, lo: int, t: int, done: torch.Tensor) -> torch.Tensor:
        """The pop term, g[i -> t] for i = lo .. t-3: sum over k, u of gamma[i -> k][q,x -> u,y] and
        done[k][u,y -> r] = sum_{s,z} gamma[k -> t-1][u,y -> s,z] pop_t[s,z -> r], through the fractions:
        log(F @ exp(log alpha[k](u,y) + done)) - log alpha[i](q,x), the columns of the right factor
        shifted by their maxima (at most what (r, y) receives by popping)."""
        B, Q, S = len(done), self.Q, self.S
        right = done.view(B, -1, Q, S, Q).double() + self._sources(lo + 1, t, t - 2)[..., None]
        right = right.permute(0, 3, 1, 2, 4).flatten(2, 3)  # (b, y, k u, r)
        shift = right.detach().amax(-2, keepdim=True)
        product = torch.matmul(self.tri.flatten(2, 4).flatten(-2), (right - shift).exp())  # (b, y, i q x, r)
        logs = product.clamp_min(torch.finfo(product.dtype).tiny).log() + shift
        logs = logs - self._sources(lo, t, t - 3).flatten(1)[:, None, :, None]
        return logs.view(B, S, -1, Q, S, Q).permute(0, 2, 3, 4, 5, 1).to(done.dtype)

    def _grow_tri(self, lo: int, t: int) -> None:
        """Bring `tri` to i = lo .. t-3, k = lo+1 .. t-2: drop what left the window, add row t-3 (zero) and
        column t-2 (the fractions of gamma[i -> t-2], from the column kept before the last)."""
        newest = self.cols[0][:, lo - self._lo(t - 2):].double()  # g[i -> t-2][q,x -> u,y], i = lo .. t-3
        share = newest + self._sources(lo, t, t - 3)[..., None, None] - self._sources(t - 2, t, t - 2)[:, :, None, None]
        share = share.exp().clamp_max(1.0)  # above 1 by rounding only, or in rows of sources that cannot occur
        newest = share.permute(0, 5, 1, 2, 3, 4)[:, :, :, :, :, None]  # (b, y, i, q, x, k, u)
        if self.tri is None:
            self.tri = newest
            return
        cut = lo - self._lo(t - 1)
        tri = self.tri[:, :, cut:, :, :, cut:]
        row = tri.new_zeros((*tri.shape[:2], 1, *tri.shape[3:]))
        self.tri = torch.cat([torch.cat([tri, row], 2), newest], 5)


class RNSRNNConfig(ModelConfig):
    arch: Literal["rns_rnn"] = "rns_rnn"
    tasks: ClassVar = ("synthetic",)
    hidden_dim: int = Field(20, gt=0, description="units of the LSTM controller")
    states: int = Field(2, ge=1, description="Q, the states of the stack automaton")
    stack_symbols: int = Field(3, ge=1, description="S, the stack alphabet (symbol 0 is also the bottom)")
    window: int | None = Field(None, ge=1, description="D of the limited version: only the runs whose top symbol "
                               "was pushed at most D steps ago, O(n D^2) per string (null: all runs, O(n^3))")
    init_scale: float | None = Field(0.1, gt=0, description="uniform init range (the authors' 0.1; null: torch "
                                     "defaults)")


class RNSRNN(SequenceModel):
    def __init__(self, cfg: RNSRNNConfig, sizes: VocabSizes):
        super().__init__()
        Q, S = self.shape = cfg.states, cfg.stack_symbols
        self.window = cfg.window
        self.cell = nn.LSTMCell(sizes.src + Q * S, cfg.hidden_dim)
        self.actions = nn.Linear(cfg.hidden_dim, Q * S * (2 * Q * S + Q))
        self.out = nn.Linear(cfg.hidden_dim, sizes.tgt)
        init_uniform(self, cfg.init_scale)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (B, T, F) -> controller states (B, T, H); the stack starts fresh for each batch."""
        B, T, _ = inputs.shape
        Q, S = self.shape
        stack = NondeterministicStack(B, Q, S, window=self.window, dtype=inputs.dtype, device=inputs.device)
        state, outputs = None, []
        for t in range(T):
            if t:
                stack.update(*self.weights(state[0]))
            state = self.cell(torch.cat([inputs[:, t], stack.reading()], 1), state)
            outputs.append(state[0])
        return torch.stack(outputs, 1)

    def weights(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-weights of push, repl (B, Q, S, Q, S) and pop (B, Q, S, Q) from controller states (B, H)."""
        Q, S = self.shape
        logits = self.actions(h).view(len(h), Q, S, 2 * Q * S + Q)
        push, repl, pop = logits.split([Q * S, Q * S, Q], -1)
        return push.unflatten(-1, (Q, S)), repl.unflatten(-1, (Q, S)), pop

    def outputs(self, batch) -> torch.Tensor:
        return self.out(self(batch.inputs))

    def loss(self, batch, label_smoothing: float = 0.0, state=None) -> LossOut:
        loss, nll = objective_loss(self.outputs(batch), batch, label_smoothing)
        return LossOut(loss, nll, batch.ntokens)


@MODELS.register("rns_rnn", config=RNSRNNConfig)
def build_rns_rnn(cfg: RNSRNNConfig, sizes: VocabSizes) -> RNSRNN:
    return RNSRNN(cfg, sizes)
