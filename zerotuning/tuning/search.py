"""Grid search over gamma for one set of heads, reusing the baseline as the gamma = 1 point."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..scoring.records import ScoredSplit
from .objectives import Objective


@dataclass(frozen=True)
class Candidate:
    """One scored gamma: its objective key and the split metrics."""

    gamma: float
    key: tuple[float, ...]
    metrics: dict

    def to_json(self) -> dict:
        return {"gamma": self.gamma, "key": list(self.key), "metrics": self.metrics}


def check_gammas(gammas: Sequence[float], name: str = "gammas") -> tuple[float, ...]:
    """Positive, finite, de-duplicated, sorted."""
    bad = [gamma for gamma in gammas if not (math.isfinite(gamma) and gamma > 0)]
    if bad or not gammas:
        raise ValueError(f"{name}: expected a non-empty list of finite positive numbers, got {list(gammas)}")
    return tuple(sorted(set(float(gamma) for gamma in gammas)))


def best_candidate(candidates: Sequence[Candidate]) -> Candidate:
    """The largest key; ties go to the gamma closest to 1 (the smallest intervention), then the smaller gamma."""
    return max(candidates, key=lambda candidate: (candidate.key, -abs(math.log(candidate.gamma)), -candidate.gamma))


def search_gamma(
    gammas: Sequence[float],
    score_gamma: Callable[[float], ScoredSplit],
    objective: Objective,
    baseline: ScoredSplit,
    description: str,
) -> tuple[Candidate, list[Candidate]]:
    """Score each gamma (gamma = 1 is the baseline, never rescored) and return (best, all sorted by gamma).

    The baseline is always a candidate, so the search never returns something worse on the
    calibration objective than leaving the model alone.
    """
    candidates = [Candidate(1.0, objective.key(baseline), {**baseline.summary(), **objective.metrics(baseline)})]
    for gamma in tqdm([gamma for gamma in check_gammas(gammas) if gamma != 1.0], desc=description, unit="gamma", leave=False):
        scored = score_gamma(gamma)
        candidates.append(Candidate(gamma, objective.key(scored), {**scored.summary(), **objective.metrics(scored)}))
    candidates.sort(key=lambda candidate: candidate.gamma)
    return best_candidate(candidates), candidates
