"""Context-free languages as language-modelling data (DuSell and Chiang 2020, 2022; papers.md card 7).

Each string is drawn from a PCFG conditioned on its length, the length uniform over the lengths the language
has in [lo, hi]; a model reads BOS and the string and predicts every symbol, then the end of the string.
With k symbol types (bracket kinds for Dyck) and the authors' rates m / (m + 1) for a mean m:

    marked_reversal    w # w^R        S -> a S a  p/k  |  #  1-p
    unmarked_reversal  w w^R          S -> a S a  p/k  |  eps  1-p
    padded_reversal    w a^m w^R      S -> a S a  p/k  |  T_a  (1-p)/k;   T_a -> a T_a  g  |  eps  1-g
    dyck               balanced       S -> S T  s  |  T  1-s;   T -> (_j S )_j  v/k  |  (_j )_j  (1-v)/k

The least cross-entropy a model can reach on a string w of length l is -log p(w) with
    p(w) = p(l) p_G(w) / Z_l,   Z_l = sum of p_G over the strings of length l,   p(l) = 1 / #lengths,
so per symbol the bound of a set of strings is sum(-log p(w)) / sum(l + 1) (the end is predicted too).
The reversals are uniform given the length (p(w | l) = k^-(l//2)); padded reversal sums its derivations
(w a^m w^R may also split elsewhere); Dyck's derivation is unique and Z_l comes from inside sums by length.
Greibach's hardest CFL is not built: it needs a general PCFG inside algorithm over strings.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import replace

import numpy as np

from seqtool.data.sequences import Examples, concatenate


def continue_rate(mean: float) -> float:
    """The rate of X -> a X whose geometric length has this mean (the authors' mean_to_continue_prob)."""
    return mean / (mean + 1)


def _logsumexp(values) -> float:
    values = np.asarray(values, float)
    top = values.max(initial=-math.inf)
    return top if top == -math.inf else float(top + np.log(np.exp(values - top).sum()))


def _pick(rng: np.random.Generator, log_weights) -> int:
    """An index drawn in proportion to exp(log_weights)."""
    w = np.exp(np.asarray(log_weights, float) - _logsumexp(log_weights))
    return int(rng.choice(len(w), p=w / w.sum()))


class Language(ABC):
    """A length-conditioned string distribution over symbols 0..alphabet-1."""

    alphabet: int

    @abstractmethod
    def has_length(self, n: int) -> bool:
        """Whether some string has length n."""

    @abstractmethod
    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        """A string of length n drawn from p(w | n)."""

    @abstractmethod
    def log_prob(self, word: list[int]) -> float:
        """log p(w | |w|): the PCFG's probability of w over that of all strings of its length."""

    def determined_from(self, word: list[int]) -> int:
        """The first target index (targets: the word, then the end) from which every target follows
        from the prefix; len(word) + 1 when none does."""
        return len(word) + 1


class Reversal(Language):
    """w # w^R (marked: '#' is symbol k) or w w^R over k symbols; uniform given the length."""

    def __init__(self, symbols: int, marked: bool):
        self.k, self.marked = symbols, marked
        self.alphabet = symbols + marked

    def has_length(self, n: int) -> bool:
        return n % 2 == int(self.marked)

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        w = rng.integers(self.k, size=n // 2).tolist()
        return w + [self.k] * self.marked + w[::-1]

    def log_prob(self, word: list[int]) -> float:
        return -(len(word) // 2) * math.log(self.k)

    def determined_from(self, word: list[int]) -> int:
        return len(word) // 2 + 1 if self.marked else len(word) + 1


class PaddedReversal(Language):
    """w a^m w^R: a half of h symbols, a run of one symbol, the half reversed."""

    def __init__(self, symbols: int, mean_content: float, mean_padding: float):
        self.k = self.alphabet = symbols
        self.nest, self.pad = continue_rate(mean_content), continue_rate(mean_padding)

    def has_length(self, n: int) -> bool:
        return n >= 0

    def _halves(self, n: int) -> np.ndarray:
        """log sum of p_G over the strings of length n whose derivation has half length h, for each h."""
        h = np.arange(n // 2 + 1)
        return (h * math.log(self.nest) + math.log1p(-self.nest) + (n - 2 * h) * math.log(self.pad)
                + math.log1p(-self.pad))

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        h = _pick(rng, self._halves(n))
        w = rng.integers(self.k, size=h).tolist()
        return w + [int(rng.integers(self.k))] * (n - 2 * h) + w[::-1]

    def log_prob(self, word: list[int]) -> float:
        n, each = len(word), self._halves(len(word)) - (np.arange(len(word) // 2 + 1) + 1) * math.log(self.k)
        derivations = []
        for h in range(n // 2 + 1):
            middle = word[h : n - h]
            if word[:h] == word[n - h :][::-1] and len(set(middle)) <= 1:
                derivations.append(each[h] + (math.log(self.k) if not middle else 0.0))  # eps pad: any T_a
        return _logsumexp(derivations) - _logsumexp(self._halves(n))


class Dyck(Language):
    """Balanced strings of k bracket kinds: symbol 2j opens kind j, 2j + 1 closes it."""

    def __init__(self, kinds: int, mean_splits: float, mean_nesting: float):
        self.kinds, self.alphabet = kinds, 2 * kinds
        self.split, self.nest = continue_rate(mean_splits), continue_rate(mean_nesting - 1)
        self._s, self._t = [-math.inf], [-math.inf]  # log inside sums of S and T by length, kinds summed

    def has_length(self, n: int) -> bool:
        return n >= 2 and n % 2 == 0

    def _inside(self, n: int) -> None:
        s, t = self._s, self._t
        for m in range(len(s), n + 1):
            if m % 2:
                t.append(-math.inf)
            else:
                t.append(math.log1p(-self.nest) if m == 2 else math.log(self.nest) + s[m - 2])
            splits = [s[j] + t[m - j] for j in range(2, m - 1, 2)]
            s.append(_logsumexp([math.log1p(-self.split) + t[m], math.log(self.split) + _logsumexp(splits)]))

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        self._inside(n)
        return self._sample_s(rng, n)

    def _sample_s(self, rng: np.random.Generator, n: int) -> list[int]:
        """S -> S T | T read right to left: the last T's length, then the rest."""
        blocks = []
        while True:
            options = [math.log1p(-self.split) + self._t[n]]
            options += [math.log(self.split) + self._s[j] + self._t[n - j] for j in range(2, n - 1, 2)]
            choice = _pick(rng, options)
            last = n if choice == 0 else n - 2 * choice
            blocks.append(self._sample_t(rng, last))
            if choice == 0:
                return [s for block in reversed(blocks) for s in block]
            n -= last

    def _sample_t(self, rng: np.random.Generator, n: int) -> list[int]:
        kind = int(rng.integers(self.kinds))
        inner = self._sample_s(rng, n - 2) if n > 2 else []
        return [2 * kind, *inner, 2 * kind + 1]

    def log_prob(self, word: list[int]) -> float:
        self._inside(len(word))
        children, logp = [0], 0.0  # T nodes completed inside each open bracket (the top level first)

        def s_node(count: int) -> float:
            return (count - 1) * math.log(self.split) + math.log1p(-self.split)

        for symbol in word:
            if symbol % 2 == 0:
                children.append(0)
                continue
            inner = children.pop()
            logp += -math.log(self.kinds) + (math.log(self.nest) + s_node(inner) if inner else math.log1p(-self.nest))
            children[-1] += 1
        return logp + s_node(children[0]) - self._s[len(word)]


def build_language(name: str, symbols: int, *, mean_splits: float, mean_nesting: float, mean_content: float,
                   mean_padding: float) -> Language:
    if name in ("marked_reversal", "unmarked_reversal"):
        return Reversal(symbols, marked=name == "marked_reversal")
    if name == "padded_reversal":
        return PaddedReversal(symbols, mean_content, mean_padding)
    return Dyck(symbols, mean_splits, mean_nesting)


def lengths_of(language: Language, lo: int, hi: int) -> list[int]:
    return [n for n in range(lo, hi + 1) if language.has_length(n)]


def lm_task(rng: np.random.Generator, n: int, *, language: Language, lengths: tuple[int, int]) -> Examples:
    """n strings as next-symbol prediction: inputs BOS w (BOS = alphabet), targets w EOS (EOS = alphabet);
    every target is in the loss, the determined ones are scored; `bound` holds each string's -log p(w)."""
    valid = lengths_of(language, *lengths)
    end, rows, bounds = language.alphabet, [], []
    for _ in range(n):
        word = language.sample(rng, valid[int(rng.integers(len(valid)))])
        targets = np.asarray([*word, end], np.int64)
        scored = np.arange(len(targets)) >= language.determined_from(word)
        rows.append((np.asarray([end, *word], np.int64), targets, np.ones(len(targets), bool), scored))
        bounds.append(math.log(len(valid)) - language.log_prob(word))
    return replace(concatenate(rows), bound=np.asarray(bounds))
