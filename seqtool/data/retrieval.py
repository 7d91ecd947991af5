"""Synthetic long-range key->value retrieval text for language models (card 8's CPU check), from a seed.

A document is running text of filler words `f<i>` in which a key is bound to a random value by one
word `k<j>=v<m>`, and queried once, a gap of `gaps` = [lo, hi] tokens later, with `? k<j> v<m>`. A key
is bound again only after its query, so between a binding and its query the key does not appear, and
each value is drawn afresh: the query's value can be predicted only by remembering the binding (chance
1 / values otherwise). Each query's value word is marked with its gap: the distance from the binding to
the query's key, the token at which the value is predicted. (A binding is one word so that finding it
is one attention hop: with `k<j> v<m>` as two words a small model must first learn to join them.)
"""

from __future__ import annotations

import random
from collections.abc import Iterator

QUERY = "?"


def document(rng: random.Random, spec) -> tuple[list[str], list[int]]:
    """About spec.doc_len words, and for each the gap of the query it answers (0: not an answer)."""
    lo, hi = spec.gaps
    words: list[str] = []
    marks: list[int] = []
    free, pending = list(range(spec.keys)), []  # pending: (due, key, value, position of the binding)
    while len(words) < spec.doc_len:
        now = len(words)
        due = min((p for p in pending if p[0] <= now), default=None)
        if due is not None:
            pending.remove(due)
            _, key, value, bound = due
            free.append(key)
            words += [QUERY, f"k{key}", f"v{value}"]
            marks += [0, 0, now + 1 - bound]
        elif free and rng.random() < spec.rate:
            key, value = free.pop(rng.randrange(len(free))), rng.randrange(spec.values)
            pending.append((now + rng.randint(lo, hi) - 1, key, value, now))
            words.append(f"k{key}=v{value}")
            marks.append(0)
        else:
            words.append(f"f{rng.randrange(spec.fillers)}")
            marks.append(0)
    return words, marks


def generate_documents(spec, split: str) -> Iterator[tuple[list[str], list[int]]]:
    """The documents of one split (spec.train/valid/test of them), each split from its own stream."""
    rng = random.Random(f"retrieval/{spec.seed}/{split}")
    for _ in range(getattr(spec, split)):
        yield document(rng, spec)
