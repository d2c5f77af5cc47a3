"""Percentile bootstrap confidence intervals for a mean (an accuracy, or a paired difference of them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES_PER_CHUNK = 1000  # bounds memory at chunk x N indices


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    level: float

    def to_json(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level}


def bootstrap_mean_interval(values: np.ndarray, *, resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of ``values.mean()``, resampling examples with replacement.

    For a paired difference of two accuracies pass ``correct_b - correct_a`` per example: each
    resample then keeps the pairs together, which is what a paired comparison needs.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values: expected a non-empty 1-D array, got shape {values.shape}")
    if resamples < 1:
        raise ValueError(f"resamples: got {resamples}, expected >= 1")
    if not 0 < level < 1:
        raise ValueError(f"level: got {level}, expected a probability in (0, 1)")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, RESAMPLES_PER_CHUNK):
        stop = min(resamples, start + RESAMPLES_PER_CHUNK)
        indices = rng.integers(0, values.size, size=(stop - start, values.size))
        means[start:stop] = values[indices].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(estimate=float(values.mean()), low=float(low), high=float(high), level=level)
