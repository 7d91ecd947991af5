"""The diagonal linear recurrence x_k = a ⊙ x_{k-1} + b_k of a time-invariant state-space layer, computed
with O(log T) depth.

A prefix scan (Blelloch 1990) with the associative operator of S5 (Smith et al. 2023, sec. 2.2):
    (a_i, b_i) • (a_j, b_j) = (a_j a_i, a_j b_i + b_j)
Because a is the same at every step, an element covering 2^l steps always has a^(2^l) as its first half,
so only the b's are stored. One level combines neighbouring pairs, (x_{2i+1} in terms of x_{2i-1})
    b'_i = a b_{2i} + b_{2i+1},   scanned recursively with a² (T/2 elements, one level deeper),
which gives x at the odd positions; the even ones follow in one step, x_{2i} = a x_{2i-1} + b_{2i}.
That is O(T) work in 2 log2 T dependent steps of vectorised torch (torch has no associative scan).
Forward and backward on one CPU thread (`bench/s5_scan.py --scans`, bench/README.md) it runs at the same
tokens/s from T = 1k to 16k, 2x the O(T log T) Hillis-Steele doubling scan at 1k and 4-5x at 4k-16k,
and 33x the Python loop over time at 1k (150x at 4k).
"""

from __future__ import annotations

import torch


def linear_scan(a: torch.Tensor, b: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
    """All states x_1..x_T of x_k = a x_{k-1} + b_k for a (P,) and b (..., T, P); x_0 = start (..., P) or 0."""
    if start is not None:
        b = torch.cat([b[..., :1, :] + a * start.unsqueeze(-2), b[..., 1:, :]], -2)
    return _scan(a, b)


def _scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    steps = b.size(-2)
    if steps == 1:
        return b
    if steps % 2:  # a zero step at the end changes none of the states before it
        return _scan(a, torch.cat([b, torch.zeros_like(b[..., :1, :])], -2))[..., :steps, :]
    even, odd = b[..., 0::2, :], b[..., 1::2, :]
    x_odd = _scan(a * a, a * even + odd)
    x_even = torch.cat([even[..., :1, :], even[..., 1:, :] + a * x_odd[..., :-1, :]], -2)
    return torch.stack((x_even, x_odd), -2).flatten(-3, -2)
