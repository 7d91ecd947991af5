"""Length and coverage penalties of finished hypotheses, as pure functions.

    s(Y, X) = log P(Y|X) / lp(Y) + cp(X; Y)
    lp(Y)   = ((5 + |Y|) / (5 + 1)) ** alpha     gnmt     (Wu et al. 2016, eq. 14)
            = |Y| ** alpha                       fairseq  (its --lenpen: division by length)
            = 1                                  none
    cp(X; Y) = beta * sum_{i=1}^{|X|} log(min(sum_{j=1}^{|Y|} p_ij, 1.0))   (GNMT)
|Y| counts every generated token including the final EOS; i runs over non-pad source positions
(pads count as fully covered, log 1 = 0, so padding never changes a score). Both lengths penalties
grow with |Y| for alpha >= 0, which the beam search's stopping bound relies on. At the same alpha the
fairseq form favours long outputs more: lp(10)/lp(5) at alpha 1 is 2 for fairseq, 15/10 = 1.5 for GNMT.
"""

from __future__ import annotations

import torch

from seqtool.recipe.schema import LengthPenalty

# A source word that got no attention at all has log(0) = -inf coverage; clamping keeps the score
# finite (a very large penalty) so ranking still works instead of every such hypothesis tying.
_MIN_COVERAGE = 1e-10


def length_penalty(lengths: torch.Tensor, alpha: float, kind: LengthPenalty = "gnmt") -> torch.Tensor:
    """lp for a tensor of lengths (EOS included); 1 when alpha is 0 or kind is none."""
    n = lengths.to(torch.float32)
    if kind == "none" or alpha == 0.0:
        return torch.ones_like(n)
    return (n if kind == "fairseq" else (5.0 + n) / 6.0) ** alpha


def coverage_penalty(attn_sum: torch.Tensor, src_mask: torch.Tensor, beta: float) -> torch.Tensor:
    """cp for (N, S) attention sums over the output so far and an (N, S) mask of real source positions."""
    if beta == 0.0:
        return attn_sum.new_zeros(attn_sum.size(0))
    coverage = attn_sum.clamp(_MIN_COVERAGE, 1.0).masked_fill(~src_mask, 1.0)
    return beta * coverage.log().sum(-1)


def gnmt_score(log_prob: torch.Tensor, lengths: torch.Tensor, attn_sum: torch.Tensor | None,
               src_mask: torch.Tensor | None, *, alpha: float, beta: float,
               kind: LengthPenalty = "gnmt") -> torch.Tensor:
    """The final score s(Y, X) of finished hypotheses, with the length penalty of `kind`."""
    score = log_prob / length_penalty(lengths, alpha, kind)
    if beta != 0.0 and attn_sum is not None:
        score = score + coverage_penalty(attn_sum, src_mask, beta)
    return score
