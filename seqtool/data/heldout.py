"""A fixed held-out split of one list of sentence pairs that ships without one (Tatoeba's tab-separated
exports): the same file and seed give the same train/valid/test split on every machine.

Leakage is what makes such a split wrong, so pairs are first grouped: exact duplicates collapse, and
two pairs that share their source or their target sentence (Tatoeba lists one English sentence with
several German translations) fall into the same group, transitively. Whole groups are then dealt, in
a seeded random order, to test and valid until each holds at least its size; the rest is train. No
source or target sentence of a held-out pair is therefore seen in training.
"""

from __future__ import annotations

import numpy as np

Pair = tuple[str, str]


def _groups(pairs: list[Pair]) -> list[list[Pair]]:
    """Distinct pairs joined when they share a side (union-find over sentences), in first-seen order."""
    parent: dict[tuple[int, str], tuple[int, str]] = {}

    def root(node: tuple[int, str]) -> tuple[int, str]:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    distinct = list(dict.fromkeys(pairs))
    for src, tgt in distinct:
        a, b = root((0, src)), root((1, tgt))
        if a != b:
            parent[a] = b
    groups: dict[tuple[int, str], list[Pair]] = {}
    for pair in distinct:
        groups.setdefault(root((0, pair[0])), []).append(pair)
    return list(groups.values())


def held_out_split(pairs: list[Pair], sizes: dict[str, int], seed: int) -> dict[str, list[Pair]]:
    """`sizes` pairs (at least; a group is never cut) for each held-out split in order, the rest in
    "train"; each split lists its groups in the order the file first shows them."""
    groups = _groups(pairs)
    order = np.random.default_rng(seed).permutation(len(groups))
    splits: dict[str, list[int]] = {name: [] for name in [*sizes, "train"]}
    names, taken = iter(sizes), 0
    current = next(names, "train")
    for index in order:
        while current != "train" and taken >= sizes[current]:
            current, taken = next(names, "train"), 0
        splits[current].append(int(index))
        taken += len(groups[index])
    return {name: [pair for i in sorted(chosen) for pair in groups[i]] for name, chosen in splits.items()}
