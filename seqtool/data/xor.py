"""XOR of marked positions (CDIL-CNN, Cheng et al. 2022, sec. 4.1; ../shared/papers.md card 17), as tokens.

The paper's sequence is N values x_t ~ U(0,1) with a second channel marking two positions p, q anywhere;
the label is XOR(x_p >= 0.5, x_q >= 0.5). Here each value is quantized to one of `levels` equal bins
(bin >= levels / 2 exactly when x >= 0.5) and a position's token is its bin, or bin + levels when it is
marked, so a model reads one token id per position. With `marks` other than 2 the label is the parity of
that many marked bits (marks 1: copy one far bit).
Two levels (the default) give the model exactly the bit the label reads, which a model of the real x
gets through one threshold; with more, an embedding must learn the threshold bin by bin, and the task
becomes much slower to learn (CDIL at N = 32: 16 levels stay at chance for 1,000 steps where 2 levels
reach 100% in 200).
"""

from __future__ import annotations

import numpy as np


def symbols(levels: int) -> list[str]:
    """Token names: v<bin> for an unmarked value, m<bin> for a marked one (symbol id = position here)."""
    return [f"v{b}" for b in range(levels)] + [f"m{b}" for b in range(levels)]


def draw_sequence(rng: np.random.Generator, *, length: int, marks: int, levels: int) -> tuple[np.ndarray, int]:
    """One sequence (symbol ids, int64) and its label, the parity of the bits at the marked positions."""
    values = rng.integers(levels, size=length)
    marked = rng.choice(length, size=marks, replace=False)
    label = int(np.count_nonzero(values[marked] >= levels // 2) % 2)
    values[marked] += levels
    return values, label
