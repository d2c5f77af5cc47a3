"""Scoring a candidate on a real model: ``zerotuning.apply`` its profile (or swap it into a vLLM engine), then score a split."""

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


def serve_and_score(engine, scorer, scoring_set: ScoringSet, ledger: CostLedger) -> ScoreCache:
    """As ``apply_and_score``, through a vLLM engine (``zerotuning.vllm.scoring_engine``): each profile swapped into it."""

    def score(profile: Profile, description: str) -> ScoredSplit:
        engine.serve(profile)
        return scorer.score(scoring_set, f"{scoring_set.name}: {description}")

    return ScoreCache(score, ledger)


def serve_and_score_subset(engine, scorer, scoring_set: ScoringSet):
    """As ``apply_and_score_subset``, through a vLLM engine."""

    def score(profile: Profile, indices, description: str) -> ScoredSplit:
        engine.serve(profile)
        return scorer.score(scoring_set.subset(indices), f"{scoring_set.name}: {description}")

    return score
