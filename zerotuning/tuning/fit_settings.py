"""Level 3's settings and its held-out fold of the calibration split (no torch: the tuner and the CLI read them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HELD_OUT_FRACTION = 0.25
PATIENCE = 3  # steps without a lower held-out loss before the fit stops


@dataclass(frozen=True)
class FitSettings:
    steps: int = 10
    learning_rate: float = 0.1
    prior: float = 0.01  # L2 strength on log-gamma; math.inf pins every gamma at 1

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"fit_steps: got {self.steps!r}, expected an integer >= 1")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"fit_learning_rate: got {self.learning_rate}, expected a finite number > 0")
        if not (self.prior >= 0):  # NaN fails too; +inf is allowed
            raise ValueError(f"fit_prior: got {self.prior}, expected a number >= 0 (inf: every gamma stays 1)")


def held_out_fold(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices) of a split of ``count`` examples, each sorted; a seeded quarter is held out."""
    if count < 2:
        raise ValueError(f"calibration split: level 3 needs at least 2 examples (a fit and a held-out fold), got {count}")
    order = np.random.default_rng(seed).permutation(count)
    held = max(1, round(count * HELD_OUT_FRACTION))
    return np.sort(order[held:]), np.sort(order[:held])
