"""Remembering scores by profile, so no gamma setting is scored twice on one split."""

from __future__ import annotations

from collections.abc import Callable

from ..profile import Profile
from ..scoring.cost import CostLedger
from ..scoring.records import ScoredSplit
from .candidates import profile_key


class ScoreCache:
    """Wraps ``score(profile, description)``; a profile whose gammas were scored before costs nothing.

    Hits happen for the baseline reused as the gamma = 1 grid point, Level 0's gamma again in
    Level 1's grid, and re-reading a level's chosen profile; the ledger counts them.
    """

    def __init__(self, score: Callable[[Profile, str], ScoredSplit], ledger: CostLedger) -> None:
        self._score = score
        self._ledger = ledger
        self._results: dict[tuple, ScoredSplit] = {}

    def __call__(self, profile: Profile, description: str) -> ScoredSplit:
        key = profile_key(profile)
        if key in self._results:
            self._ledger.record_cache_hit()
        else:
            self._results[key] = self._score(profile, description)
        return self._results[key]
