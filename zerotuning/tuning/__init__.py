"""Tuning gamma on the calibration split: objectives, grid search, head probing and the levels.

The model-facing pieces (``model_scoring``, ``experiment``, ``run_record``) import the HF glue and
are imported by their module path; everything exported here works on a ``CandidateSpace`` and any
scorer of profiles.
"""

from .candidates import CandidateSpace, check_layers, profile_key
from .head_probing import GRANULARITIES, HeadEffect, HeadProbes, probe_heads
from .objectives import ENTROPY_CHOICES, SupervisedObjective, UnsupervisedObjective, make_objective
from .score_cache import ScoreCache
from .search import Candidate, best_candidate, check_gammas, search_gamma
from .tuner import DEFAULT_GAMMAS, DEFAULT_LEVELS, LEVELS, LevelResult, TuningConfig, TuningResult, tune

__all__ = [
    "DEFAULT_GAMMAS",
    "ENTROPY_CHOICES",
    "GRANULARITIES",
    "DEFAULT_LEVELS",
    "LEVELS",
    "Candidate",
    "CandidateSpace",
    "HeadEffect",
    "HeadProbes",
    "LevelResult",
    "ScoreCache",
    "SupervisedObjective",
    "TuningConfig",
    "TuningResult",
    "UnsupervisedObjective",
    "best_candidate",
    "check_gammas",
    "check_layers",
    "make_objective",
    "probe_heads",
    "profile_key",
    "search_gamma",
    "tune",
]
