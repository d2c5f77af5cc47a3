"""The three tuning levels on the calibration split, sharing one baseline and one score cache.

- Level 0: one fixed gamma on every head of the tunable layers (no search).
- Level 1: a gamma grid on every head of the tunable layers.
- Level 2: head probing (by scoring, or from one forward + backward pass) -> the dominant kind (up- or down-effective) -> a gamma grid on those
  heads only, restricted to the kind's side of 1 (gamma > 1 for up, < 1 for down).
The level whose profile has the best calibration objective is selected (ties: the lower level).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..profile import Profile
from ..scoring.cost import CostLedger
from ..scoring.records import ScoredSplit
from .candidates import CandidateSpace, Head
from .fit_settings import FitSettings
from .gradient_probes import gradient_head_probes
from .head_probing import DOWN, NEUTRAL, UP, HeadProbes, check_probe_settings, probe_heads
from .objectives import Objective
from .search import Candidate, check_gammas, search_gamma

LEVELS = (0, 1, 2, 3)
DEFAULT_LEVELS = (0, 1, 2)  # level 3 is asked for by name: it costs a forward and a backward pass per step
SEARCHES = ("budgeted", "levels")
PROBES = ("forward", "gradient")  # Level 2's head profiling: one scoring pass per probe, or one forward + backward
DEFAULT_GAMMAS = (0.25, 0.5, 0.75, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)

ScoreProfile = Callable[[Profile, str], ScoredSplit]
HeadGradients = Callable[[Profile], np.ndarray]  # [num_layers, num_heads] d surrogate / d log_gamma at a profile
GammaFit = Callable[[CandidateSpace, FitSettings], tuple[Profile, dict]]  # level 3: the fitted profile and the fit's record


@dataclass(frozen=True)
class TuningConfig:
    """Which search to run: ``"budgeted"`` (successive halving within ``budget`` x the published protocol's
    passes, ``zerotuning.tuning.budgeted``) or ``"levels"`` (the levels and their settings:
    ``probes``/``probe_gamma``/``granularity`` for Level 2; ``probes="gradient"`` profiles the heads from
    one forward + backward pass, ``zerotuning.tuning.gradient_sensitivity``; ``fit_steps``/``fit_learning_rate``/
    ``fit_prior`` for Level 3, ``zerotuning.tuning.gradient_fit``)."""

    search: str = "budgeted"
    budget: float = 0.25
    levels: tuple[int, ...] = DEFAULT_LEVELS
    fixed_gamma: float = 2.0
    gammas: tuple[float, ...] = DEFAULT_GAMMAS
    probe_gamma: float = 2.0
    granularity: str = "head"
    probes: str = "forward"
    fit_steps: int = FitSettings.steps
    fit_learning_rate: float = FitSettings.learning_rate
    fit_prior: float = FitSettings.prior

    @property
    def fit(self) -> FitSettings:
        return FitSettings(self.fit_steps, self.fit_learning_rate, self.fit_prior)

    def __post_init__(self) -> None:
        self.fit  # checks the level 3 settings
        if self.probes not in PROBES:
            raise ValueError(f"probes: got {self.probes!r}, expected one of {PROBES}")
        if self.search not in SEARCHES:
            raise ValueError(f"search: got {self.search!r}, expected one of {SEARCHES}")
        if not (math.isfinite(self.budget) and self.budget > 0):
            raise ValueError(f"budget: got {self.budget}, expected a positive fraction of the published protocol's passes")
        if not self.levels or any(level not in LEVELS for level in self.levels):
            raise ValueError(f"levels: got {list(self.levels)}, expected a non-empty subset of {list(LEVELS)}")
        check_gammas([self.fixed_gamma], "fixed_gamma")
        check_gammas(self.gammas, "gammas")
        check_probe_settings(self.probe_gamma, self.granularity)
        if self.search == "levels" and 2 in self.levels and not (min(self.gammas) < 1 < max(self.gammas)):
            # Which side level 2 searches is known only after probing: refuse before any work is done.
            raise ValueError(
                f"gammas: level 2 searches below 1 (down-effective heads) or above 1 (up-effective heads), decided by "
                f"the probes, so the grid needs gammas on both sides of 1; got {list(self.gammas)}"
            )

    def to_json(self) -> dict:
        return {
            "search": self.search,
            "budget": self.budget,
            "levels": list(self.levels),
            "fixed_gamma": self.fixed_gamma,
            "gammas": list(self.gammas),
            "probe_gamma": self.probe_gamma,
            "granularity": self.granularity,
            "probes": self.probes,
            "fit_steps": self.fit_steps,
            "fit_learning_rate": self.fit_learning_rate,
            "fit_prior": "inf" if math.isinf(self.fit_prior) else self.fit_prior,
        }


@dataclass
class LevelResult:
    """The outcome of one level: its profile, where it applies, and what it cost."""

    level: int | str  # 0, 1, 2, 3, or "budgeted"
    gamma: float
    heads: list[Head] | None  # None: every head of the tunable layers
    profile: Profile
    scored: ScoredSplit
    key: tuple[float, ...]
    candidates: list[Candidate] = field(default_factory=list)
    head_probes: HeadProbes | None = None
    note: str = ""
    cost: dict = field(default_factory=dict)
    objective_metrics: dict = field(default_factory=dict)  # the objective's calibrated components, by name
    search: dict | None = None  # the budgeted search's plan, rungs and selection
    fit: dict | None = None  # level 3: the gradient fit's settings, losses and early-stopping step

    @property
    def name(self) -> str:
        """``level<N>`` or ``budgeted``: the stage, file and table name of this result."""
        return f"level{self.level}" if isinstance(self.level, int) else str(self.level)

    def calibration_metrics(self) -> dict:
        return {**self.scored.summary(), **self.objective_metrics}

    def to_json(self) -> dict:
        return {
            "level": self.level,
            "gamma": self.gamma,
            "heads": "all" if self.heads is None else [list(head) for head in self.heads],
            "head_count": None if self.heads is None else len(self.heads),
            "calibration": self.calibration_metrics(),
            "key": list(self.key),
            "candidates": [candidate.to_json() for candidate in self.candidates],
            "head_profile": None if self.head_probes is None else self.head_probes.to_json(),  # the recorded field name
            "note": self.note,
            "cost": self.cost,
            **({"search": self.search} if self.search is not None else {}),
            **({"fit": self.fit} if self.fit is not None else {}),
        }


@dataclass
class TuningResult:
    baseline: ScoredSplit
    baseline_key: tuple[float, ...]
    levels: dict[int | str, LevelResult]
    selected_level: int | str
    baseline_metrics: dict = field(default_factory=dict)

    @property
    def selected(self) -> LevelResult:
        return self.levels[self.selected_level]

    def to_json(self) -> dict:
        return {
            "baseline": {"calibration": self.baseline_metrics or self.baseline.summary(), "key": list(self.baseline_key)},
            "levels": {str(level): result.to_json() for level, result in self.levels.items()},
            "selected_level": self.selected_level,
        }


def tune(
    space: CandidateSpace,
    score_profile: ScoreProfile,
    objective: Objective,
    config: TuningConfig,
    ledger: CostLedger,
    baseline: ScoredSplit,
    head_gradients: HeadGradients | None = None,
    fit_gammas: GammaFit | None = None,
) -> TuningResult:
    """Run the configured levels against ``baseline`` (the untouched model's calibration scores);
    ``head_gradients`` is needed for gradient head profiling (``config.probes == "gradient"``), ``fit_gammas`` for level 3."""
    if config.probes == "gradient" and 2 in config.levels and head_gradients is None:
        raise ValueError("probes: 'gradient' needs head_gradients (the calibration split's log-gamma gradients)")
    if 3 in config.levels and fit_gammas is None:
        raise ValueError("levels: level 3 needs fit_gammas (a gradient fit on the calibration split), which this run does not provide")
    runners = {
        0: _level0,
        1: _level1,
        2: functools.partial(_level2, head_gradients=head_gradients),
        3: functools.partial(_level3, fit_gammas=fit_gammas),
    }
    levels = {}
    for level in sorted(config.levels):
        with ledger.stage(f"level{level}"):
            levels[level] = runners[level](space, score_profile, objective, config, baseline, ledger)
        levels[level].cost = {name: cost for name, cost in ledger.to_json()["stages"].items() if name.startswith(f"level{level}")}
        levels[level].objective_metrics = objective.metrics(levels[level].scored)
    selected = max(levels.values(), key=lambda result: (result.key, -result.level)).level
    baseline_metrics = {**baseline.summary(), **objective.metrics(baseline)}
    return TuningResult(baseline=baseline, baseline_key=objective.key(baseline), levels=levels, selected_level=selected, baseline_metrics=baseline_metrics)


def _level0(space, score_profile, objective, config, baseline, ledger) -> LevelResult:
    profile = space.uniform(config.fixed_gamma)
    scored = score_profile(profile, f"level 0 (gamma {config.fixed_gamma:g})")
    return LevelResult(0, config.fixed_gamma, None, profile, scored, objective.key(scored))


def _level1(space, score_profile, objective, config, baseline, ledger) -> LevelResult:
    best, candidates = search_gamma(
        config.gammas, lambda gamma: score_profile(space.uniform(gamma), f"level 1 gamma {gamma:g}"), objective, baseline, "level 1 grid"
    )
    if best.gamma == 1.0:
        note = "no gamma beat the baseline on the calibration objective; the profile is neutral"
        return LevelResult(1, 1.0, None, space.neutral(), baseline, best.key, candidates, note=note)
    profile = space.uniform(best.gamma)
    scored = score_profile(profile, "level 1 best")  # a cache hit: every grid point was scored above
    return LevelResult(1, best.gamma, None, profile, scored, best.key, candidates)


def _level2(space, score_profile, objective, config, baseline, ledger, head_gradients=None) -> LevelResult:
    with ledger.stage("level2.profiling"):
        if config.probes == "gradient":
            head_probes = gradient_head_probes(space, head_gradients(space.neutral()), probe_gamma=config.probe_gamma, granularity=config.granularity)
        else:
            head_probes = probe_heads(
                space, score_profile, objective, baseline, probe_gamma=config.probe_gamma, granularity=config.granularity
            )
    kind = head_probes.dominant_kind()
    if kind == NEUTRAL:
        note = "no probed head changed the calibration objective; the profile is neutral"
        return LevelResult(2, 1.0, [], space.neutral(), baseline, objective.key(baseline), head_probes=head_probes, note=note)
    heads = head_probes.heads_of(kind)
    side = [gamma for gamma in config.gammas if (gamma > 1) == (kind == UP) and gamma != 1]
    if not side:
        raise ValueError(
            f"gammas: the dominant head kind is {kind}-effective, which needs gammas {'above' if kind == UP else 'below'} 1, "
            f"but the grid is {list(config.gammas)}"
        )
    with ledger.stage("level2.search"):
        best, candidates = search_gamma(
            side, lambda gamma: score_profile(space.for_heads(gamma, heads), f"level 2 gamma {gamma:g}"), objective, baseline, f"level 2 grid ({kind} heads)"
        )
    if best.gamma == 1.0:
        note = f"no gamma on the {len(heads)} {kind}-effective heads beat the baseline; the profile is neutral"
        return LevelResult(2, 1.0, [], space.neutral(), baseline, best.key, candidates, head_probes, note)
    profile = space.for_heads(best.gamma, heads)
    scored = score_profile(profile, "level 2 best")
    note = f"rescaled the {len(heads)} {kind}-effective heads ({DOWN if kind == UP else UP}-effective heads left alone)"
    return LevelResult(2, best.gamma, heads, profile, scored, best.key, candidates, head_probes, note)


def _level3(space, score_profile, objective, config, baseline, ledger, fit_gammas=None) -> LevelResult:
    with ledger.stage("level3.fit"):
        profile, fit = fit_gammas(space, config.fit)
    if fit["best_step"] == 0:
        note = "no gradient step lowered the held-out fold's loss; early stopping kept the untouched model (gamma 1)"
        return LevelResult(3, 1.0, [], space.neutral(), baseline, objective.key(baseline), note=note, fit=fit)
    log_gammas = np.log([profile.gammas[layer][head] for layer in space.layers for head in range(space.num_heads)])
    gamma = float(np.exp(log_gammas.mean()))  # the geometric mean stands for the level in one-number summaries
    scored = score_profile(profile, "level 3 fitted")
    note = (
        f"fitted a gamma per head on the {len(log_gammas)} heads of the tunable layers: {np.exp(log_gammas.min()):.3g} to "
        f"{np.exp(log_gammas.max()):.3g} (geometric mean {gamma:.3g}); held-out loss lowest at step {fit['best_step']} of {fit['steps_run']}"
    )
    return LevelResult(3, gamma, None, profile, scored, objective.key(scored), note=note, fit=fit)
