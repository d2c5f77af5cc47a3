"""End-to-end generation runs: tune Levels 0-2 on a generation task, evaluate a profile on one (collateral damage)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..hf import apply, remove
from ..profile import ModelIdentity, Profile
from ..scoring.cost import CostLedger
from ..tasks.task import Task
from ..tuning.candidates import CandidateSpace
from ..tuning.score_cache import ScoreCache
from ..tuning.tuner import TuningConfig, TuningResult, tune
from .objectives import GenerationObjective, make_generation_objective
from .prepared import PreparedGeneration, prepare_generation
from .records import GenerationScores
from .report import compare_generation
from .scorer import MEASURES, GenerationScorer

DEFAULT_MAX_NEW_TOKENS = 32


@dataclass(frozen=True)
class GenerationSettings:
    """What shapes a generation run besides the model and the task (recorded in every results file)."""

    shots: int = 0
    seed: int = 0
    batch_size: int = 8
    layers: tuple[int, ...] | None = None
    objective: str = "supervised"
    tuning: TuningConfig = field(default_factory=TuningConfig)
    resamples: int = 10_000
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    chat_template: str = "auto"  # --chat-template: auto, on or off

    def to_json(self) -> dict:
        return {
            "shots": self.shots,
            "seeds": {"splits": self.seed, "demonstrations": self.seed, "bootstrap": self.seed},
            "batch_size": self.batch_size,
            "layers": None if self.layers is None else list(self.layers),
            "objective": self.make_objective().to_json(),
            "tuning": self.tuning.to_json(),
            "bootstrap_resamples": self.resamples,
            "generation": {"max_new_tokens": self.max_new_tokens, "chat_template": self.chat_template, "decoding": "greedy, KV cache"},
        }

    def make_objective(self) -> GenerationObjective:
        return make_generation_objective(self.objective)


class GenerationSession:
    """A model and a prepared generation task, with one scorer, one ledger and one score cache per split.

    Calibration candidates are scored on what the objective needs only; the test split on every measure.
    """

    def __init__(self, model, tokenizer, task: Task, settings: GenerationSettings) -> None:
        self.model = model
        self.settings = settings
        self.objective = settings.make_objective()
        self.ledger = CostLedger()
        with self.ledger.stage("tokenisation"):
            self.prepared: PreparedGeneration = prepare_generation(
                task, tokenizer, chat_template=settings.chat_template, shots=settings.shots, seed=settings.seed, eos_token_ids=_eos_ids(model)
            )
        self.space = CandidateSpace.for_model(model, settings.layers)
        self.scorer = GenerationScorer(model, self.prepared.prompt_format, batch_size=settings.batch_size, max_new_tokens=settings.max_new_tokens, ledger=self.ledger)
        self.score = {
            "calibration": self._cached("calibration", self.objective.measures),
            "test": self._cached("test", MEASURES),
        }

    def _cached(self, split: str, measures: tuple[str, ...]) -> ScoreCache:
        generation_set = self.prepared.sets[split]

        def score(profile: Profile, description: str) -> GenerationScores:
            apply(self.model, profile)
            return self.scorer.score(generation_set, f"{split}: {description}", measures)

        return ScoreCache(score, self.ledger)

    def baseline(self, split: str) -> GenerationScores:
        with self.ledger.stage(f"baseline.{split}"):
            return self.score[split](self.space.neutral(), "baseline")

    def header(self, model_info: dict) -> dict:
        return {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": model_info,
            "task": self.prepared.summary(),
            "splits": {name: len(generation_set) for name, generation_set in self.prepared.sets.items()},
            "settings": self.settings.to_json(),
        }


def run_generation_tuning(model, tokenizer, task: Task, settings: GenerationSettings, model_info: dict) -> tuple[dict, TuningResult]:
    """Levels 0-2 on the calibration split with a generation objective; baseline vs the selected profile on test."""
    session = GenerationSession(model, tokenizer, task, settings)
    try:
        baseline = session.baseline("calibration")
        result = tune(session.space, session.score["calibration"], session.objective, settings.tuning, session.ledger, baseline)
        baseline_test = session.baseline("test")
        with session.ledger.stage("tuned.test"):
            tuned_test = session.score["test"](result.selected.profile, f"level {result.selected_level}")
    finally:
        remove(model)
    selected = result.selected
    results = {
        **session.header(model_info),
        "tuning": result.to_json(),
        "selected": {"level": selected.level, "gamma": selected.gamma, "heads": selected.to_json()["heads"], "note": selected.note},
        "test": compare_generation(baseline_test, tuned_test, resamples=settings.resamples, seed=settings.seed),
        "cost": session.ledger.to_json(),
        "predictions": generation_predictions(baseline_test, tuned_test),
    }
    return results, result


def run_generation_evaluation(model, tokenizer, task: Task, profile: Profile, settings: GenerationSettings, model_info: dict) -> dict:
    """The untouched model vs ``profile`` on the test split of a generation task, every measure."""
    profile.check_matches(ModelIdentity.of(model))  # before any scoring, not when the profile is first applied
    session = GenerationSession(model, tokenizer, task, settings)
    try:
        baseline_test = session.baseline("test")
        with session.ledger.stage("tuned.test"):
            tuned_test = session.score["test"](profile, "tuned")
    finally:
        remove(model)
    return {
        **session.header(model_info),
        "test": compare_generation(baseline_test, tuned_test, resamples=settings.resamples, seed=settings.seed),
        "cost": session.ledger.to_json(),
        "predictions": generation_predictions(baseline_test, tuned_test),
    }


def generation_predictions(baseline: GenerationScores, tuned: GenerationScores) -> list[dict]:
    """Per test example: its references, both answers and the per-example measures."""
    base, new = baseline.per_example(), tuned.per_example()
    return [
        {
            "id": example_id,
            "references": list(baseline.references[index]),
            "baseline": baseline.generations.texts[index],
            "tuned": tuned.generations.texts[index],
            "baseline_measures": {name: _json_number(values[index]) for name, values in base.items()},
            "tuned_measures": {name: _json_number(values[index]) for name, values in new.items()},
        }
        for index, example_id in enumerate(baseline.example_ids)
    ]


def _json_number(value: float) -> float | None:
    return None if value != value else float(value)  # NaN (no pattern) -> null


def _eos_ids(model) -> tuple[int, ...]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return tuple(eos) if isinstance(eos, (list, tuple)) else (eos,) if eos is not None else ()
