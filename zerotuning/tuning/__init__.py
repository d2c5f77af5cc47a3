"""Tuning gamma on the calibration split: objectives, grid search, head profiling and the three levels.

The model-facing pieces (``model_profiles``, ``experiment``) import the HF glue and are imported
by their module path; everything exported here works on any ``ProfileSpace`` and scorer.
"""

from .head_profiling import GRANULARITIES, HeadEffect, HeadProfile, profile_heads
from .objectives import ENTROPY_CHOICES, SupervisedObjective, UnsupervisedObjective, make_objective
from .profile_space import ProfileSpace, check_layers, profile_key
from .score_cache import ScoreCache
from .search import Candidate, best_candidate, check_gammas, search_gamma
from .tuner import DEFAULT_GAMMAS, LEVELS, LevelResult, TuningConfig, TuningResult, tune

__all__ = [
    "DEFAULT_GAMMAS",
    "ENTROPY_CHOICES",
    "GRANULARITIES",
    "LEVELS",
    "Candidate",
    "HeadEffect",
    "HeadProfile",
    "LevelResult",
    "ProfileSpace",
    "ScoreCache",
    "SupervisedObjective",
    "TuningConfig",
    "TuningResult",
    "UnsupervisedObjective",
    "best_candidate",
    "check_gammas",
    "check_layers",
    "make_objective",
    "profile_heads",
    "profile_key",
    "search_gamma",
    "tune",
]
