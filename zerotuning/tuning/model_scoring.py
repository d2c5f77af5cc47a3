"""Scoring a candidate on a real model: ``zerotuning.apply`` its profile, then score a split."""

from __future__ import annotations

from ..hf import apply
from ..profile import Profile
from ..scoring.cost import CostLedger
from ..scoring.encoding import ScoringSet
from ..scoring.records import ScoredSplit
from ..scoring.scorer import Scorer
from ..scoring.sequence_scorer import SequenceScorer
from .score_cache import ScoreCache


def apply_and_score(model, scorer: Scorer | SequenceScorer, scoring_set: ScoringSet, ledger: CostLedger) -> ScoreCache:
    """Score ``scoring_set`` after applying each profile to ``model``, cached by the profile's gammas."""

    def score(profile: Profile, description: str) -> ScoredSplit:
        apply(model, profile)
        return scorer.score(scoring_set, f"{scoring_set.name}: {description}")

    return ScoreCache(score, ledger)


def apply_and_score_subset(model, scorer: Scorer | SequenceScorer, scoring_set: ScoringSet):
    """``score(profile, indices, description)``: the examples of ``scoring_set`` at ``indices``, under ``profile`` (not cached)."""

    def score(profile: Profile, indices, description: str) -> ScoredSplit:
        apply(model, profile)
        return scorer.score(scoring_set.subset(indices), f"{scoring_set.name}: {description}")

    return score
