"""Synthetic translation corpora generated from a seed: number-to-words, copy and reverse.

They let the quickstart and the tests run offline in minutes, with a task whose right answer is known.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ("", "thousand", "million", "billion")


def number_to_words(n: int) -> str:
    """English words for 0 <= n < 10**12: 40512 -> 'forty thousand five hundred twelve'."""
    if n == 0:
        return "zero"
    groups = []
    scale = 0
    while n:
        n, group = divmod(n, 1000)
        if group:
            groups.append(_hundreds(group) + ([_SCALES[scale]] if scale else []))
        scale += 1
    return " ".join(word for group in reversed(groups) for word in group)


def _hundreds(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    words = [_ONES[hundreds], "hundred"] if hundreds else []
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words += [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    elif rest:
        words.append(_ONES[rest])
    return words


def _num2words(rng: random.Random, spec) -> tuple[str, str]:
    digits = rng.randint(1, spec.max_digits)
    n = rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits)
    return " ".join(str(n)), number_to_words(n)


def _symbols(rng: random.Random, spec) -> list[str]:
    alphabet = [chr(ord("a") + i) for i in range(spec.symbols)]
    return [rng.choice(alphabet) for _ in range(rng.randint(spec.min_len, spec.max_len))]


def _copy(rng: random.Random, spec) -> tuple[str, str]:
    seq = " ".join(_symbols(rng, spec))
    return seq, seq


def _reverse(rng: random.Random, spec) -> tuple[str, str]:
    seq = _symbols(rng, spec)
    return " ".join(seq), " ".join(reversed(seq))


GENERATORS = {"num2words": _num2words, "copy": _copy, "reverse": _reverse}


def generate_pairs(spec, split: str) -> Iterator[tuple[str, str]]:
    """The pairs of one split; each split has its own stream so sizes can change independently."""
    rng = random.Random(f"{spec.task}/{spec.seed}/{split}")
    make = GENERATORS[spec.task]
    for _ in range(getattr(spec, split)):
        yield make(rng, spec)
