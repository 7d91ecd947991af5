"""Several corpora in one translation model: the corpora of a split, held-out splits of tab-separated
corpora (Tatoeba), and the weighted draw of each epoch's training sentences.

A list-form `data.train` is prepared as one concatenated training split whose manifest entry lists
each corpus's sentence count (`corpora`); a list-form valid or test split becomes one prepared split
per corpus (`valid.<name>`), measured on its own. An epoch with weights w_c over corpora of n_c
sentences draws N = sum_c n_c sentences, round(N w_c / sum w) of them from corpus c: whole passes over
the corpus, then a seeded choice without replacement for the rest, so a single corpus (or weights in
proportion to the sizes) draws every sentence once, as the plain form does. The draw is a pure
function of (seed, epoch), like the batch order, so a resumed run draws the same sentences.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqtool.data.textio import iter_numbered_lines
from seqtool.errors import located


@dataclass(frozen=True)
class Part:
    """One corpus of a prepared split: its files, and for list-form splits its name, weight and tag."""

    src: str
    tgt: str
    name: str | None = None
    weight: float = 1.0
    tag: str | None = None
    key: str = ""  # the recipe key it came from, for errors (data.train.0)
    origin: tuple[str, ...] = ()  # the files it is made from, when src/tgt are written by prepare (tsv)


def held_out_split(path: Path, columns: tuple[int, int], count: int, seed: int,
                   errors: str = "strict") -> dict[str, list[tuple[str, str]]]:
    """Train, valid and test pairs of a tab-separated corpus with no official split (Tatoeba): the
    distinct (source, target) pairs of the two columns, shuffled by `seed`; the first `count` are
    valid, the next `count` test, and the rest train, less every pair that shares a side with a
    held-out pair (Tatoeba gives one English sentence several translations)."""
    pairs: dict[tuple[str, str], None] = {}
    for number, line in iter_numbered_lines(path, errors):
        fields = line.split("\t")
        if max(columns) >= len(fields):
            raise located(path, f"{len(fields)} tab-separated fields, columns {list(columns)} need "
                                f"{max(columns) + 1}", number)
        pairs[(fields[columns[0]].strip(), fields[columns[1]].strip())] = None
    unique = list(pairs)
    if len(unique) <= 2 * count:
        raise located(path, f"{len(unique)} distinct pairs: too few to hold out {count} for valid and test "
                            "each (data.held_out)")
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    held = shuffled[: 2 * count]
    return {"valid": held[:count], "test": held[count:], "train": drop_sentences(shuffled[2 * count:], held)}


def drop_sentences(pairs: list[tuple[str, str]], held: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs that share neither side with a held-out pair."""
    seen = {side for pair in held for side in pair}
    return [p for p in pairs if p[0] not in seen and p[1] not in seen]


def corpus_counts(counts: list[int], weights: list[float]) -> np.ndarray:
    """Sentences each corpus gives an epoch: its weight's share of all the sentences, at least one."""
    total, share = sum(counts), np.asarray(weights, dtype=np.float64) / sum(weights)
    return np.maximum(np.rint(total * share).astype(np.int64), 1)


def weighted_draw(counts: list[int], weights: list[float], seed: int, epoch: int) -> np.ndarray:
    """Sorted indices into the concatenated corpora for one epoch (see the module docstring)."""
    drawn, start = [], 0
    for c, (n, k) in enumerate(zip(counts, corpus_counts(counts, weights))):
        rng = np.random.default_rng([seed, epoch, c])
        rest = rng.choice(n, int(k % n), replace=False) if k % n else np.zeros(0, np.int64)
        drawn.append(start + np.concatenate([np.tile(np.arange(n), int(k // n)), rest]))
        start += n
    return np.sort(np.concatenate(drawn))
