"""GNMT's length and coverage penalties (Wu et al. 2016, eq. 14), as pure functions.

    s(Y, X) = log P(Y|X) / lp(Y) + cp(X; Y)
    lp(Y)    = ((5 + |Y|) / (5 + 1)) ** alpha
    cp(X; Y) = beta * sum_{i=1}^{|X|} log(min(sum_{j=1}^{|Y|} p_ij, 1.0))
|Y| counts every generated token including the final EOS; i runs over non-pad source positions
(pads count as fully covered, log 1 = 0, so padding never changes a score).
"""

from __future__ import annotations

import torch

# A source word that got no attention at all has log(0) = -inf coverage; clamping keeps the score
# finite (a very large penalty) so ranking still works instead of every such hypothesis tying.
_MIN_COVERAGE = 1e-10


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """lp = ((5 + |Y|) / 6) ** alpha for a tensor of lengths; 1 when alpha is 0."""
    return ((5.0 + lengths.to(torch.float32)) / 6.0) ** alpha


def coverage_penalty(attn_sum: torch.Tensor, src_mask: torch.Tensor, beta: float) -> torch.Tensor:
    """cp for (N, S) attention sums over the output so far and an (N, S) mask of real source positions."""
    if beta == 0.0:
        return attn_sum.new_zeros(attn_sum.size(0))
    coverage = attn_sum.clamp(_MIN_COVERAGE, 1.0).masked_fill(~src_mask, 1.0)
    return beta * coverage.log().sum(-1)


def gnmt_score(log_prob: torch.Tensor, lengths: torch.Tensor, attn_sum: torch.Tensor | None,
               src_mask: torch.Tensor | None, *, alpha: float, beta: float) -> torch.Tensor:
    """The final score s(Y, X) of finished hypotheses."""
    score = log_prob / length_penalty(lengths, alpha)
    if beta != 0.0 and attn_sum is not None:
        score = score + coverage_penalty(attn_sum, src_mask, beta)
    return score
