"""ListOps as the Long Range Arena builds it (Tay et al. 2021, sec. 3.1; after Nangia and Bowman 2018):
nested list operators over the digits 0-9, the label the value of the whole expression (10 classes).

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]   ->  5
    MAX, MIN       the largest, smallest argument
    MED            the median; for an even count the mean of the middle two rounded down
                   (LRA's int(np.median(...)) on digits)
    SM             the sum modulo 10
An expression is a tree drawn top-down: the root is an operator; below it each argument is an operator
with probability 0.25 (LRA's VALUE_P), else a digit, and at depth `max_depth` always a digit; an operator
takes 2 to `max_args` arguments (LRA: depth 10, 10 arguments). Trees whose length is outside
[min_length, max_length] are redrawn. Lengths count the symbols a model reads: operators, digits and
the closing `]`; LRA's generator counted its parenthesised text (about three times longer) and its
models read the same symbols as here, parentheses dropped.

`evaluate` is the reference evaluator: a stack machine over the symbols, independent of how the
generator builds and values its trees (the tests check that the two agree).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
END = "]"
DIGITS = tuple(str(d) for d in range(10))
SYMBOLS = (*OPERATORS, END, *DIGITS)  # symbol ids are positions in this tuple
FIRST_DIGIT = SYMBOLS.index("0")
OPERATOR_P = 0.25  # an argument is itself an operator with this probability (LRA's VALUE_P)
SHORTEST = 4  # an operator with two digits: [OP a b ]

FUNCTIONS: dict[str, Callable[[list[int]], int]] = {
    "[MAX": max,
    "[MIN": min,
    "[MED": lambda values: int(statistics.median(values)),
    "[SM": lambda values: sum(values) % 10,
}


class _TooLong(Exception):
    """A tree grew past max_length: it would be rejected, so it is not drawn to the end."""


def longest(max_depth: int, max_args: int) -> int:
    """The most symbols a tree can have: every argument above max_depth an operator with max_args."""
    length = 1
    for _ in range(max_depth - 1):
        length = max_args * length + 2
    return length


def draw_expression(rng: random.Random, *, min_length: int, max_length: int, max_depth: int,
                    max_args: int) -> tuple[list[int], int]:
    """One expression (symbol ids) of a length in [min_length, max_length] and its value. Python's
    generator, not numpy's: a tree takes one scalar draw per symbol, which numpy makes several times slower."""
    while True:
        symbols: list[int] = []
        try:
            value = _operator(rng, 1, symbols, max_length, max_depth, max_args)
        except _TooLong:
            continue
        if len(symbols) >= min_length:
            return symbols, value


def _operator(rng, depth: int, out: list[int], max_length: int, max_depth: int, max_args: int) -> int:
    op = OPERATORS[rng.randrange(len(OPERATORS))]
    out.append(SYMBOLS.index(op))
    values = []
    for _ in range(rng.randint(2, max_args)):
        if depth + 1 < max_depth and rng.random() < OPERATOR_P:
            values.append(_operator(rng, depth + 1, out, max_length, max_depth, max_args))
        else:
            values.append(rng.randrange(10))
            out.append(FIRST_DIGIT + values[-1])
        if len(out) >= max_length:  # the closing symbol still has to come
            raise _TooLong
    out.append(SYMBOLS.index(END))
    return FUNCTIONS[op](values)


def evaluate(symbols: Sequence[str]) -> int:
    """The value of a ListOps expression given as symbol strings; malformed input raises ValueError."""
    stack: list[tuple[str, list[int]]] = [("", [])]  # the bottom frame collects the result
    for symbol in symbols:
        if symbol in FUNCTIONS:
            stack.append((symbol, []))
        elif symbol == END:
            if len(stack) < 2 or not stack[-1][1]:
                raise ValueError("a ] without an open operator, or an operator without arguments")
            op, values = stack.pop()
            stack[-1][1].append(FUNCTIONS[op](values))
        elif symbol in DIGITS:
            stack[-1][1].append(int(symbol))
        else:
            raise ValueError(f"not a ListOps symbol: {symbol!r}")
    if len(stack) != 1 or len(stack[0][1]) != 1:
        raise ValueError("not one complete expression")
    return stack[0][1][0]
