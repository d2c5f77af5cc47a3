"""The tuner's view of a real model: profiles built with ``zerotuning.Profile``, scored after ``zerotuning.apply``."""

from __future__ import annotations

from typing import Any

from ..hf import apply
from ..profile import Profile
from ..scoring.cost import CostLedger
from ..scoring.encoding import ScoringSet
from ..scoring.records import ScoredSplit
from ..scoring.scorer import Scorer
from .profile_space import Head, check_layers
from .score_cache import ScoreCache


class ModelProfiles:
    """Profiles of ``model`` restricted to ``layers`` (None: all layers)."""

    def __init__(self, model, layers: tuple[int, ...] | None = None) -> None:
        self.model = model
        neutral = Profile.neutral(model)
        self.num_layers = len(neutral.gammas)
        self.num_heads = len(neutral.gammas[0])
        self.layers = check_layers(layers, self.num_layers)

    def neutral(self) -> Any:
        return Profile.neutral(self.model)

    def uniform(self, gamma: float) -> Any:
        return Profile.uniform(self.model, gamma, layers=list(self.layers))

    def for_heads(self, gamma: float, heads: list[Head]) -> Any:
        outside = [head for head in heads if head[0] not in self.layers]
        if outside:
            raise ValueError(f"heads: {outside[:4]} lie outside the tunable layers {list(self.layers)}")
        return Profile.for_heads(self.model, gamma, heads)


def profile_scorer(model, scorer: Scorer, scoring_set: ScoringSet, ledger: CostLedger) -> ScoreCache:
    """Score ``scoring_set`` after applying each profile to ``model``, cached by the profile's gammas."""

    def score(profile: Any, description: str) -> ScoredSplit:
        apply(model, profile)
        return scorer.score(scoring_set, f"{scoring_set.name}: {description}")

    return ScoreCache(score, ledger)
