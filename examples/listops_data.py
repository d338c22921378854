"""ListOps (Nangia & Bowman 2018; the Long Range Arena task), generated offline by its published grammar.

A sample is a nested list of operators over digits, e.g. ``[MAX 2 9 [MIN 4 7 ] 0 ]`` -> 9.
Operators: MIN, MAX, MED (median, rounded down), SM (sum modulo 10). The generator follows the LRA
script (``lra_benchmarks/data/listops.py``): a node is a digit with probability 0.75 (always at
``max_depth``), else an operator with ``randint(2, max_args)`` arguments; trees are drawn until their
token length lies in ``(min_length, max_length)``. LRA used max_depth=10, max_args=10, lengths
500..2000, 96k/2k/2k samples; pass smaller lengths for a quick run. Data is distribution-equivalent
to LRA's, not identical (their seed and files are not used).

Tokens: 0..9 digits, 10..13 the operators, 14 ``]``, 15 padding/CLS (the classifier prepends a CLS).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
CLOSE = "]"
VALUE_P = 0.25
VOCAB = {**{str(d): d for d in range(10)}, **{op: 10 + i for i, op in enumerate(OPERATORS)}, CLOSE: 14}
CLS = 15
VOCAB_SIZE = 16


class _TooLong(Exception):
    pass


def _tree(rng: random.Random, depth: int, max_depth: int, max_args: int,
          budget: list[int]) -> tuple[object, int]:
    """LRA's generate_tree; ``budget`` aborts a tree as soon as it outgrows max_length (it would be
    rejected anyway), which keeps generation fast without changing the accepted distribution."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooLong
        return rng.randrange(10), 1
    budget[0] -= 2
    values, length = [], 2
    for _ in range(rng.randint(2, max_args)):
        sub, sub_length = _tree(rng, depth + 1, max_depth, max_args, budget)
        values.append(sub)
        length += sub_length
    op = rng.choice(OPERATORS)
    if budget[0] < 0:
        raise _TooLong
    return (op, values), length


def evaluate(tree: object) -> int:
    """The value of a tree: an int, or (operator, [children])."""
    if isinstance(tree, int):
        return tree
    op, children = tree
    values = [evaluate(c) for c in children]
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[MED":
        return int(statistics.median(values))
    return sum(values) % 10


def tokens(tree: object) -> list[str]:
    if isinstance(tree, int):
        return [str(tree)]
    op, children = tree
    out = [op]
    for c in children:
        out += tokens(c)
    return out + [CLOSE]


@dataclass
class ListOpsSample:
    ids: list[int]
    label: int


def generate(num_samples: int, min_length: int = 500, max_length: int = 2000, max_depth: int = 10,
             max_args: int = 10, seed: int = 0) -> list[ListOpsSample]:
    """``num_samples`` samples whose token length lies strictly between min_length and max_length."""
    if not 0 <= min_length < max_length:
        raise ValueError(f"need 0 <= min_length < max_length, got {min_length} and {max_length}")
    rng = random.Random(seed)
    out: list[ListOpsSample] = []
    while len(out) < num_samples:
        try:
            tree, length = _tree(rng, 1, max_depth, max_args, [max_length])
        except _TooLong:
            continue
        if min_length < length < max_length:
            out.append(ListOpsSample([VOCAB[t] for t in tokens(tree)], evaluate(tree)))
    return out


if __name__ == "__main__":
    for s in generate(3, 10, 40, seed=1):
        inverse = {v: k for k, v in VOCAB.items()}
        print(" ".join(inverse[i] for i in s.ids), "->", s.label)
