"""The exact (binomial) McNemar test for two classifiers scored on the same examples."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from math import comb

import numpy as np


@dataclass(frozen=True)
class McNemarResult:
    """Discordant counts and the two-sided exact p-value."""

    only_first_correct: int
    only_second_correct: int
    both_correct: int
    both_wrong: int
    p_value: float

    def to_json(self) -> dict:
        return asdict(self)


def mcnemar_exact(first_correct: np.ndarray, second_correct: np.ndarray) -> McNemarResult:
    """Two-sided exact McNemar test of "both are equally accurate".

    Under the null each of the n = b + c discordant examples favours either classifier with
    probability 1/2, so p = min(1, 2 * P[Binomial(n, 1/2) <= min(b, c)]), computed in exact
    rational arithmetic. No discordant pair gives p = 1.
    """
    first = np.asarray(first_correct, dtype=bool)
    second = np.asarray(second_correct, dtype=bool)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"first_correct, second_correct: expected two 1-D arrays of one length, got {first.shape} and {second.shape}")
    only_first = int((first & ~second).sum())
    only_second = int((~first & second).sum())
    discordant = only_first + only_second
    tail = sum(comb(discordant, k) for k in range(min(only_first, only_second) + 1))
    p_value = min(Fraction(1), Fraction(2 * tail, 2**discordant))
    return McNemarResult(
        only_first_correct=only_first,
        only_second_correct=only_second,
        both_correct=int((first & second).sum()),
        both_wrong=int((~first & ~second).sum()),
        p_value=float(p_value),
    )
