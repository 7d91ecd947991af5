"""Formal languages for recurrent cells: the Tomita grammars as DFAs, balanced brackets (Dyck), exact
uniform sampling of members and non-members of a given length, and DFA minimization and equivalence
(used to check an automaton extracted from a state-regularized RNN, seqtool/evaluation/automaton.py).

Tomita (1982) grammars over {0, 1}:
    1  1*                          5  even number of 0s and even number of 1s
    2  (10)*                       6  (#0 - #1) divisible by 3
    3  no odd-length run of 1s directly followed by an odd-length run of 0s (maximal runs)
    4  no 000                      7  0*1*0*1*
Uniform sampling counts, for each state and remaining length, the completions that end accepted or
rejected, then draws each symbol in proportion (so long positives of sparse grammars cost nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from seqtool.data.sequences import Examples, concatenate, final_label


@dataclass(frozen=True)
class DFA:
    """States 0..n-1, start 0; delta[state][symbol] -> state; accept[state]."""

    delta: tuple[tuple[int, ...], ...]
    accept: tuple[bool, ...]

    @property
    def symbols(self) -> int:
        return len(self.delta[0])

    def run(self, word) -> bool:
        state = 0
        for symbol in word:
            state = self.delta[state][symbol]
        return self.accept[state]


TOMITA = {
    1: DFA(((1, 0), (1, 1)), (True, False)),
    2: DFA(((2, 1), (0, 2), (2, 2)), (True, False, False)),
    # 0 neutral, 1 odd run of 1s, 2 odd run of 0s after one (reject if it ends so), 3 even such run, 4 dead
    3: DFA(((0, 1), (2, 0), (3, 4), (2, 1), (4, 4)), (True, True, False, True, False)),
    4: DFA(((1, 0), (2, 0), (3, 0), (3, 3)), (True, True, True, False)),
    5: DFA(((1, 2), (0, 3), (3, 0), (2, 1)), (True, False, False, False)),
    6: DFA(((1, 2), (2, 0), (0, 1)), (True, False, False)),
    7: DFA(((0, 1), (2, 1), (2, 3), (4, 3), (4, 4)), (True, True, True, True, False)),
}


@lru_cache(maxsize=64)
def _completions(dfa: DFA, label: bool, remaining: int) -> tuple[int, ...]:
    """Per state: the number of words of length `remaining` leading from it to a state with `label`."""
    if remaining == 0:
        return tuple(int(a == label) for a in dfa.accept)
    after = _completions(dfa, label, remaining - 1)
    return tuple(sum(after[nxt] for nxt in row) for row in dfa.delta)


def sample_word(rng: np.random.Generator, dfa: DFA, length: int, label: bool) -> list[int] | None:
    """A uniformly random word of `length` that the DFA accepts (label True) or rejects; None if none."""
    if _completions(dfa, label, length)[0] == 0:
        return None
    state, word = 0, []
    for remaining in range(length - 1, -1, -1):
        counts = [_completions(dfa, label, remaining)[nxt] for nxt in dfa.delta[state]]
        pick = rng.random() * sum(counts)
        symbol = 0
        while pick >= counts[symbol] and symbol < len(counts) - 1:
            pick -= counts[symbol]
            symbol += 1
        word.append(symbol)
        state = dfa.delta[state][symbol]
    return word


def tomita_task(rng: np.random.Generator, n: int, *, grammar: int, lengths: tuple[int, int]) -> Examples:
    """n words, lengths uniform in [lo, hi], label 1 (member) or 0 with equal probability."""
    dfa, rows = TOMITA[grammar], []
    while len(rows) < n:
        length, label = int(rng.integers(lengths[0], lengths[1] + 1)), bool(rng.integers(2))
        word = sample_word(rng, dfa, length, label)
        if word is not None:
            rows.append(final_label(np.asarray(word), int(label)))
    return concatenate(rows)


@lru_cache(maxsize=256)
def _dyck_ways(remaining: int, depth: int) -> int:
    """Bracket skeletons of `remaining` symbols that close from `depth` to 0 without going below 0."""
    if depth < 0 or depth > remaining:
        return 0
    if remaining == 0:
        return 1
    return _dyck_ways(remaining - 1, depth + 1) + _dyck_ways(remaining - 1, depth - 1)


def balanced_word(rng: np.random.Generator, pairs: int, kinds: int) -> list[int]:
    """A uniformly random balanced word with `pairs` bracket pairs of `kinds` types; symbol 2j opens
    type j and 2j+1 closes it."""
    word, stack = [], []
    for remaining in range(2 * pairs, 0, -1):
        opens = _dyck_ways(remaining - 1, len(stack) + 1)
        closes = _dyck_ways(remaining - 1, len(stack) - 1)
        if rng.random() * (opens + closes) < opens:
            stack.append(int(rng.integers(kinds)))
            word.append(2 * stack[-1])
        else:
            word.append(2 * stack.pop() + 1)
    return word


def is_balanced(word, kinds: int) -> bool:
    stack = []
    for symbol in word:
        if symbol % 2 == 0:
            stack.append(symbol)
        elif not stack or stack.pop() != symbol - 1:
            return False
    return not stack


def dyck_task(rng: np.random.Generator, n: int, *, kinds: int, lengths: tuple[int, int]) -> Examples:
    """n words of even length in [lo, hi]: balanced (label 1), or a balanced word with one symbol replaced
    by another (label 0; one substitution always unbalances a Dyck word)."""
    rows = []
    for _ in range(n):
        pairs = int(rng.integers(max(1, (lengths[0] + 1) // 2), lengths[1] // 2 + 1))
        word = balanced_word(rng, pairs, kinds)
        label = int(rng.integers(2))
        if not label:
            at = int(rng.integers(len(word)))
            word[at] = int((word[at] + rng.integers(1, 2 * kinds)) % (2 * kinds))
        rows.append(final_label(np.asarray(word), label))
    return concatenate(rows)


def minimize(dfa: DFA) -> DFA:
    """The minimal DFA of the reachable part (Moore's partition refinement), states renumbered by
    breadth-first order from the start."""
    reach, queue = {0}, [0]
    while queue:
        for n in dfa.delta[queue.pop()]:
            if n not in reach:
                reach.add(n)
                queue.append(n)
    states = sorted(reach)
    block = {s: int(dfa.accept[s]) for s in states}
    while True:
        keys = {s: (block[s], *(block[n] for n in dfa.delta[s])) for s in states}
        numbering = {k: i for i, k in enumerate(sorted(set(keys.values())))}
        refined = {s: numbering[keys[s]] for s in states}
        if len(set(refined.values())) == len(set(block.values())):
            break
        block = refined
    order, queue = {block[0]: 0}, [0]
    representative = {}
    while queue:
        s = queue.pop(0)
        representative[block[s]] = s
        for n in dfa.delta[s]:
            if block[n] not in order:
                order[block[n]] = len(order)
                queue.append(n)
    delta = [None] * len(order)
    accept = [False] * len(order)
    for b, i in order.items():
        s = representative[b]
        delta[i] = tuple(order[block[n]] for n in dfa.delta[s])
        accept[i] = dfa.accept[s]
    return DFA(tuple(delta), tuple(accept))


def counterexample(a: DFA, b: DFA) -> list[int] | None:
    """A shortest word on which the two DFAs disagree, or None when they accept the same language."""
    seen, queue = {(0, 0): []}, [(0, 0)]
    while queue:
        pair = queue.pop(0)
        word = seen[pair]
        if a.accept[pair[0]] != b.accept[pair[1]]:
            return word
        for symbol in range(a.symbols):
            nxt = (a.delta[pair[0]][symbol], b.delta[pair[1]][symbol])
            if nxt not in seen:
                seen[nxt] = [*word, symbol]
                queue.append(nxt)
    return None
