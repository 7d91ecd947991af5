"""Generated sequence tasks for recurrent cells, all drawn from a seeded numpy generator.

Every task is a set of sequences; at each step the model reads an input (a symbol, one-hot encoded, or
a feature vector) and may be asked for an output (a class, per head; a multi-hot frame; a real value).
`weight` marks the outputs that enter the loss, `scored` those counted in accuracy. The layouts follow
../shared/papers.md (shared synthetic tasks; cards 1, 2, 13, 14, 19):

    copy     K symbols from {1..S}, T blanks, a marker, K-1 blanks; the target is T+K blanks, then the K
             symbols. Loss at every step (memoryless baseline K ln S / (T + 2K): 0.173 for T=100, K=10,
             S=8); accuracy over the K recalled symbols.
    denoise  K symbols from {1..S} at random places among T+K steps of noise (blank), a marker, K-1 blanks;
             the target is T+K blanks, then the K symbols in order (NC-GRU; baseline K ln S / (T + 2K)).
    adding   T steps of (value ~ U(0,1), marker); one marker in each half; the target at the last step is
             the sum of the two marked values (mean squared error; predicting 1 gives ~0.167).
    recall   L i.i.d. symbols from {0..S-1}; one output head per delay k in `delays` asks at step t for
             x_{t-k} (t >= k): the delayed-recall memorization probe (card 14), all delays read from one
             state as in Jaeger's memory capacity.
    tomita   binary strings, half in Tomita grammar g, classified at the last symbol (formal.py).
    dyck     strings of n bracket pairs, half balanced, the rest one substitution away (formal.py).
    cfl      strings of a context-free language to model symbol by symbol, with their least loss (cfl.py).
    arma     windows of one simulated ARMA(p, q) series; the target at step t is x_{t+1} (card 13).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_STEPS_ARMA = 10  # ARMA windows start with zero lags; the first predictions are not scored


@dataclass
class Examples:
    """Sequences stored flat: example i covers rows offsets[i]:offsets[i+1] of every array.

    inputs  (R,) int symbols or (R, F) float features
    targets (R,) or (R, D) int classes (D heads), or (R, O) float values / multi-hot frames
    weight  like class targets ((R,) or (R, D)), or (R,) for float targets: True = in the loss
    scored  like weight: True = counted in accuracy
    bound   (N,) float or None: each sequence's least reachable summed loss, where the distribution that
            generated it is known (the -log p(w) of a context-free string, cfl.py)
    """

    inputs: np.ndarray
    targets: np.ndarray
    weight: np.ndarray
    scored: np.ndarray
    offsets: np.ndarray
    bound: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def fixed_length(inputs, targets, weight, scored) -> Examples:
    """Examples from (N, L, ...) arrays of equal-length sequences."""
    n, length = inputs.shape[:2]
    flat = [a.reshape(n * length, *a.shape[2:]) for a in (inputs, targets, weight, scored)]
    return Examples(*flat, offsets=np.arange(n + 1, dtype=np.int64) * length)


def concatenate(rows: list[tuple[np.ndarray, ...]]) -> Examples:
    """Examples from per-sequence (inputs, targets, weight, scored) tuples of any lengths."""
    lengths = [len(r[0]) for r in rows]
    arrays = [np.concatenate([r[i] for r in rows]) for i in range(4)]
    return Examples(*arrays, offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def copy_task(rng: np.random.Generator, n: int, *, delay: int, count: int, symbols: int) -> Examples:
    """Inputs 0 = blank, 1..S = data, S+1 = marker; targets 0 = blank, 1..S = data."""
    length = delay + 2 * count
    data = rng.integers(1, symbols + 1, (n, count))
    inputs = np.zeros((n, length), np.int64)
    inputs[:, :count] = data
    inputs[:, count + delay] = symbols + 1
    return _recall_tail(inputs, data, delay + count)


def denoise_task(rng: np.random.Generator, n: int, *, delay: int, count: int, symbols: int) -> Examples:
    region = delay + count
    data = rng.integers(1, symbols + 1, (n, count))
    places = np.sort(np.argsort(rng.random((n, region)), axis=1)[:, :count], axis=1)
    inputs = np.zeros((n, region + count), np.int64)
    np.put_along_axis(inputs, places, data, axis=1)
    inputs[:, region] = symbols + 1
    return _recall_tail(inputs, data, region)


def _recall_tail(inputs: np.ndarray, data: np.ndarray, start: int) -> Examples:
    targets = np.zeros_like(inputs)
    targets[:, start:] = data
    scored = np.zeros(inputs.shape, bool)
    scored[:, start:] = True
    return fixed_length(inputs, targets, np.ones(inputs.shape, bool), scored)


def adding_task(rng: np.random.Generator, n: int, *, length: int) -> Examples:
    half = length // 2
    values = rng.random((n, length)).astype(np.float32)
    first, second = rng.integers(0, half, n), rng.integers(half, length, n)
    markers = np.zeros((n, length), np.float32)
    markers[np.arange(n), first] = markers[np.arange(n), second] = 1.0
    targets = np.zeros((n, length, 1), np.float32)
    targets[:, -1, 0] = values[np.arange(n), first] + values[np.arange(n), second]
    weight = np.zeros((n, length), bool)
    weight[:, -1] = True
    return fixed_length(np.stack([values, markers], -1), targets, weight, np.zeros((n, length), bool))


def recall_task(rng: np.random.Generator, n: int, *, length: int, delays: list[int], symbols: int) -> Examples:
    x = rng.integers(0, symbols, (n, length))
    targets = np.zeros((n, length, len(delays)), np.int64)
    weight = np.zeros((n, length, len(delays)), bool)
    for d, k in enumerate(delays):
        targets[:, k:, d] = x[:, : length - k]
        weight[:, k:, d] = True
    return fixed_length(x, targets, weight, weight.copy())


def simulate_arma(rng: np.random.Generator, steps: int, *, ar: list[float], ma: list[float],
                  noise: float, burn_in: int = 500) -> np.ndarray:
    """x_t = sum_i ar_i x_{t-i} + e_t + sum_j ma_j e_{t-j}, e_t ~ N(0, noise^2); (steps,) after a burn-in."""
    total = steps + burn_in
    e = rng.normal(0.0, noise, total)
    x = np.zeros(total)
    for t in range(total):
        past_x = sum(a * x[t - i - 1] for i, a in enumerate(ar) if t - i - 1 >= 0)
        past_e = sum(m * e[t - j - 1] for j, m in enumerate(ma) if t - j - 1 >= 0)
        x[t] = past_x + e[t] + past_e
    return x[burn_in:]


def arma_task(rng: np.random.Generator, n: int, *, length: int, ar: list[float], ma: list[float],
              noise: float) -> Examples:
    """n windows of length+1 consecutive values: inputs x_1..x_L, targets x_2..x_{L+1}."""
    series = simulate_arma(rng, n * (length + 1), ar=ar, ma=ma, noise=noise).astype(np.float32)
    windows = series.reshape(n, length + 1, 1)
    weight = np.ones((n, length), bool)
    weight[:, :IGNORE_STEPS_ARMA] = False
    return fixed_length(windows[:, :-1], windows[:, 1:], weight, np.zeros((n, length), bool))


def final_label(symbols: np.ndarray, label: int) -> tuple[np.ndarray, ...]:
    """One classified sequence: the label is asked for (and scored) at its last symbol only."""
    targets = np.zeros(len(symbols), np.int64)
    targets[-1] = label
    weight = np.zeros(len(symbols), bool)
    weight[-1] = True
    return symbols.astype(np.int64), targets, weight, weight.copy()
