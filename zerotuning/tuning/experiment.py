"""End-to-end runs behind the CLI: tune on calibration then judge on test, evaluate a saved profile, probe heads."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..evaluation.bootstrap import bootstrap_mean_interval
from ..evaluation.report import compare_on_test, paired_comparison
from ..hf import remove
from ..profile import ModelIdentity, Profile
from ..scoring.answer_tokens import FULL_SEQUENCE
from ..scoring.cost import CostLedger
from ..scoring.prepared_task import PreparedTask, prepare_task
from ..scoring.option_format import OPTION_TASK_DEFAULT
from ..scoring.records import ScoredSplit
from ..scoring.scorer import make_scorer
from ..tasks.task import Task
from .candidates import CandidateSpace
from .fit_settings import FitSettings
from .gradient_fit import fit_log_gammas
from .gradient_probes import gradient_head_probes
from .gradient_sensitivity import check_answer_position_scoring, head_gradients
from .head_probing import HeadProbes, probe_heads
from ..evaluation.out_of_fold import DEFAULT_FOLDS, out_of_fold_label_bias
from .budgeted import BUDGETED, budgeted_search, plan_search, published_protocol_passes
from .model_scoring import apply_and_score, apply_and_score_subset
from .objectives import Objective, make_objective
from .tuner import TuningConfig, TuningResult, tune


@dataclass(frozen=True)
class RunSettings:
    """Everything that shapes a run besides the model and the task (recorded in every results file)."""

    shots: int = 0
    seed: int = 0
    batch_size: int = 8
    layers: tuple[int, ...] | None = None
    objective: str = "supervised"
    entropy_over: str = "answers"
    tuning: TuningConfig = field(default_factory=TuningConfig)
    resamples: int = 10_000
    answer_forms: str = "auto"
    calibration: str = "label_bias"
    folds: int = DEFAULT_FOLDS
    chat_template: str = OPTION_TASK_DEFAULT  # off, on or auto: prompts through the tokenizer's chat template (scoring/option_format.py)

    def to_json(self) -> dict:
        return {
            "shots": self.shots,
            "seeds": {"splits": self.seed, "demonstrations": self.seed, "bootstrap": self.seed},
            "batch_size": self.batch_size,
            "layers": None if self.layers is None else list(self.layers),
            "objective": self.make_objective().to_json(),
            "tuning": self.tuning.to_json(),
            "bootstrap_resamples": self.resamples,
            "answer_forms": self.answer_forms,
            "chat_template": self.chat_template,
        }

    def make_objective(self) -> Objective:
        return make_objective(self.objective, self.entropy_over, self.calibration, self.folds, self.seed)


class Session:
    """A model and a prepared task, with one scorer, one cost ledger and one score cache per split."""

    def __init__(self, model, tokenizer, task: Task, settings: RunSettings, vllm_options=None) -> None:
        self.model = model
        self.settings = settings
        self.ledger = CostLedger()
        with self.ledger.stage("tokenisation"):
            self.prepared: PreparedTask = prepare_task(
                task, tokenizer, shots=settings.shots, seed=settings.seed, answer_forms=settings.answer_forms, chat_template=settings.chat_template
            )
        self.space = CandidateSpace.for_model(model, settings.layers)
        self.objective = settings.make_objective()
        self.engine = None
        self.engine_settings = {"engine": "transformers"}
        if vllm_options is None:
            scorer = make_scorer(model, tokenizer, self.prepared.answer_tokens, batch_size=settings.batch_size, ledger=self.ledger)
            self.score = {name: apply_and_score(model, scorer, scoring_set, self.ledger) for name, scoring_set in self.prepared.sets.items()}
            self.score_subset = {name: apply_and_score_subset(model, scorer, scoring_set) for name, scoring_set in self.prepared.sets.items()}
        else:
            scorer = self._start_vllm(model, tokenizer, vllm_options)
        self.rows_per_example = scorer.rows_per_example
        self.scorer = scorer

    def _start_vllm(self, model, tokenizer, options):
        """The engine, last (nothing after it can fail before ``close``), and the score functions that swap profiles into it."""
        from ..vllm.scoring_engine import VllmEngine, VllmScorer
        from .model_scoring import serve_and_score, serve_and_score_subset

        if self.prepared.answer_tokens.mode == FULL_SEQUENCE:  # --answer-forms auto can resolve to it: refuse before the engine starts
            raise ValueError("--engine vllm: scores the answer position only, but the answers are scored whole (--answer-forms resolved to full_sequence: they share first tokens)")
        longest = max(int(scoring_set.lengths().max()) for scoring_set in self.prepared.sets.values())
        with self.ledger.stage("engine_start"):
            self.engine = VllmEngine(model, tokenizer, options, longest)
        try:
            scorer = VllmScorer(self.engine, tokenizer, self.prepared.answer_tokens, ledger=self.ledger)
        except BaseException:
            self.close()
            raise
        self.engine_settings = self.engine.settings
        self.score = {name: serve_and_score(self.engine, scorer, scoring_set, self.ledger) for name, scoring_set in self.prepared.sets.items()}
        self.score_subset = {name: serve_and_score_subset(self.engine, scorer, scoring_set) for name, scoring_set in self.prepared.sets.items()}
        return scorer

    def close(self) -> None:
        """Take the profile off the model and stop the vLLM engine, if any."""
        remove(self.model)
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def head_gradients(self, split: str):
        """``gradients(profile)``: [num_layers, num_heads] d surrogate / d log_gamma on ``split`` at ``profile``."""
        return lambda profile: head_gradients(self.model, self.scorer, self.prepared.sets[split], self.objective, profile, self.ledger)

    def fit_gammas(self, split: str):
        """``fit(space, settings)``: level 3's fitted profile and fit record on ``split`` (its own held-out fold inside it)."""

        def fit(space: CandidateSpace, settings: FitSettings):
            return fit_log_gammas(self.model, self.scorer, self.prepared.sets[split], self.objective, space, settings, self.ledger, self.settings.seed)

        return fit

    def check_gradient_paths(self) -> None:
        """Level 3 and gradient probes read the answer position: refuse whole-answer scoring before any scoring."""
        tuning = self.settings.tuning
        if tuning.search == "levels" and 3 in tuning.levels:
            check_answer_position_scoring(self.scorer, "level 3")
        if tuning.search == "levels" and 2 in tuning.levels and tuning.probes == "gradient":
            check_answer_position_scoring(self.scorer, "--probes gradient")

    def check_search_plan(self) -> None:
        """The budgeted search's plan needs only the split's size: refuse a budget or --folds it cannot meet before any scoring."""
        if self.settings.tuning.search == BUDGETED:
            examples = len(self.prepared.sets["calibration"].example_ids)
            plan_search(self.space, examples, self.settings.tuning.budget, self.objective.min_examples)

    def baseline(self, split: str) -> ScoredSplit:
        with self.ledger.stage(f"baseline.{split}"):
            return self.score[split](self.space.neutral(), "baseline")

    def header(self, model_info: dict) -> dict:
        return {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": model_info,
            "task": self.prepared.summary(),
            "splits": {name: len(scoring_set.example_ids) for name, scoring_set in self.prepared.sets.items()},
            "settings": self.settings.to_json(),
            "engine": self.engine_settings,
        }


def run_tuning(model, tokenizer, task: Task, settings: RunSettings, model_info: dict, vllm_options=None) -> tuple[dict, TuningResult]:
    """Tune on calibration, then score every level's profile on test; the results dict and the tuning result.

    ``vllm_options`` (``zerotuning.vllm.scoring_engine.VllmOptions``): score through a vLLM engine instead of ``model``."""
    session = Session(model, tokenizer, task, settings, vllm_options)
    try:
        session.check_gradient_paths()
        session.check_search_plan()
        baseline = session.baseline("calibration")
        if settings.tuning.search == BUDGETED:
            result = _budgeted(session, baseline)
        else:
            result = tune(
                session.space, session.score["calibration"], session.objective, settings.tuning, session.ledger, baseline,
                session.head_gradients("calibration"), session.fit_gammas("calibration"),
            )
        baseline_test = session.baseline("test")
        tests = {}
        for level, level_result in result.levels.items():
            with session.ledger.stage(f"test.{level_result.name}"):
                tests[level] = session.score["test"](level_result.profile, level_result.name)
    finally:
        session.close()
    selected = result.selected
    test = compare_on_test(baseline_test, tests[selected.level], baseline, selected.scored, resamples=settings.resamples, seed=settings.seed)
    results = {
        **session.header(model_info),
        "tuning": result.to_json(),
        "selected": {"level": selected.level, "gamma": selected.gamma, "heads": selected.to_json()["heads"], "note": selected.note},
        "test": test,
        "test_per_level": {
            str(level): _level_on_test(baseline_test, scored, baseline, result.levels[level].scored, settings) for level, scored in tests.items()
        },
        "selection": selection_optimism(session.objective, baseline, selected.scored, test, settings),
        "cost": {**session.ledger.to_json(), "tuning": tuning_cost(session, result)},
        "predictions": _predictions(baseline_test, tests[selected.level]),
    }
    return results, result


def _budgeted(session: Session, baseline: ScoredSplit) -> TuningResult:
    ledger = session.ledger
    with ledger.stage(BUDGETED):
        level = budgeted_search(
            session.space, session.score_subset["calibration"], session.objective, baseline, ledger,
            budget=session.settings.tuning.budget, seed=session.settings.seed,
        )
    level.cost = {BUDGETED: ledger.to_json()["stages"][BUDGETED]}
    level.objective_metrics = session.objective.metrics(level.scored)
    objective = session.objective
    return TuningResult(
        baseline=baseline,
        baseline_key=objective.key(baseline),
        levels={BUDGETED: level},
        selected_level=BUDGETED,
        baseline_metrics={**baseline.summary(), **objective.metrics(baseline)},
    )


def selection_optimism(objective: Objective, baseline: ScoredSplit, selected: ScoredSplit, test: dict, settings: RunSettings) -> dict:
    """How much of the selection's calibration gain survives on test.

    The method is what the objective judged: tuned + label bias against label bias alone when the
    objective is calibrated, tuned against the untouched model otherwise. The calibration gain is
    the out-of-fold accuracy difference for a calibrated objective (the in-sample one otherwise);
    optimism = calibration gain - test gain (positive: the selection looked better than it is).
    """
    calibrated = objective.calibration != "none"
    method, reference = ("tuned+label_bias", "baseline+label_bias") if calibrated else ("tuned", "baseline")
    if calibrated:
        def accuracy(scored: ScoredSplit) -> float:
            return float((out_of_fold_label_bias(scored, settings.folds, settings.seed).argmax(-1) == scored.answers).mean())
    else:
        def accuracy(scored: ScoredSplit) -> float:
            return scored.accuracy()
    calibration_gain = accuracy(selected) - accuracy(baseline)
    test_gain = test["methods"][method]["accuracy"]["estimate"] - test["methods"][reference]["accuracy"]["estimate"]
    return {
        "method": method,
        "reference": reference,
        "calibration_accuracy": {"method": accuracy(selected), "reference": accuracy(baseline), "out_of_fold": calibrated},
        "calibration_gain": calibration_gain,
        "test_gain": test_gain,
        "optimism": calibration_gain - test_gain,
    }


def tuning_cost(session: Session, result: TuningResult) -> dict:
    """The tuning's cost on the calibration split (baseline included) in example-equivalents, against the published protocol.

    An example-equivalent is one prompt-length forward row. Whole-answer scoring spends
    ``rows_per_example`` rows per example scored, so one pass over the split costs that many
    example-equivalents; the published protocol's passes are counted with the same scoring, so
    ``fraction_of_published`` compares passes (``split_passes``), the same as comparing example-equivalents.
    """
    stages = session.ledger.to_json()["stages"]
    names = ["baseline.calibration", *(level.name for level in result.levels.values())]
    examples = sum(stages[name]["examples_scored"] for name in names if name in stages)
    count = len(session.prepared.sets["calibration"].example_ids)
    published = published_protocol_passes(session.space.num_heads)
    rows = session.rows_per_example
    return {
        "stages": names,
        "examples_scored": examples,
        "calibration_examples": count,
        "rows_per_example": rows,
        "example_equivalent_passes": examples / count,
        "split_passes": examples / count / rows,
        "published_protocol_passes": published,
        "fraction_of_published": examples / count / rows / published,
        "seconds": sum(stages[name]["seconds"] for name in names if name in stages),
    }


def run_evaluation(model, tokenizer, task: Task, profile: Profile, settings: RunSettings, model_info: dict, vllm_options=None) -> dict:
    """Baseline vs ``profile`` on test, with calibration baselines fitted on the calibration split
    (scored through a vLLM engine with ``vllm_options``, as in ``run_tuning``)."""
    profile.check_matches(ModelIdentity.of(model))  # before any scoring, not when the profile is first applied
    session = Session(model, tokenizer, task, settings, vllm_options)
    try:
        baseline_calibration = session.baseline("calibration")
        baseline_test = session.baseline("test")
        with session.ledger.stage("tuned.calibration"):
            tuned_calibration = session.score["calibration"](profile, "tuned")
        with session.ledger.stage("tuned.test"):
            tuned_test = session.score["test"](profile, "tuned")
    finally:
        session.close()
    return {
        **session.header(model_info),
        "profile": {"metadata": profile.metadata},
        "calibration": {"baseline": baseline_calibration.summary(), "tuned": tuned_calibration.summary()},
        "test": compare_on_test(
            baseline_test, tuned_test, baseline_calibration, tuned_calibration, resamples=settings.resamples, seed=settings.seed
        ),
        "cost": session.ledger.to_json(),
        "predictions": _predictions(baseline_test, tuned_test),
    }


def run_head_probing(model, tokenizer, task: Task, settings: RunSettings, model_info: dict) -> tuple[dict, HeadProbes]:
    """Only the Level 2 probes on the calibration split."""
    session = Session(model, tokenizer, task, settings)
    try:
        baseline = session.baseline("calibration")
        with session.ledger.stage("profiling"):
            if settings.tuning.probes == "gradient":
                gradients = session.head_gradients("calibration")(session.space.neutral())
                head_probes = gradient_head_probes(session.space, gradients, probe_gamma=settings.tuning.probe_gamma, granularity=settings.tuning.granularity)
            else:
                head_probes = probe_heads(
                    session.space,
                    session.score["calibration"],
                    session.objective,
                    baseline,
                    probe_gamma=settings.tuning.probe_gamma,
                    granularity=settings.tuning.granularity,
                )
    finally:
        remove(model)
    results = {
        **session.header(model_info),
        "baseline": {"calibration": baseline.summary(), "key": list(session.objective.key(baseline))},
        "head_profile": head_probes.to_json(),  # the recorded field name
        "up_effective_heads": [list(head) for head in head_probes.heads_of("up")],
        "down_effective_heads": [list(head) for head in head_probes.heads_of("down")],
        "cost": session.ledger.to_json(),
    }
    return results, head_probes


def _level_on_test(baseline: ScoredSplit, tuned: ScoredSplit, baseline_calibration: ScoredSplit, tuned_calibration: ScoredSplit, settings: RunSettings) -> dict:
    """A level's profile on test: untouched against the baseline, and with label bias (fitted on each model's
    calibration scores) against the baseline and against label bias alone."""
    calibrated = compare_on_test(baseline, tuned, baseline_calibration, tuned_calibration, resamples=settings.resamples, seed=settings.seed)
    return {
        **tuned.summary(),
        "accuracy_interval": bootstrap_mean_interval(tuned.correct(), resamples=settings.resamples, seed=settings.seed).to_json(),
        **paired_comparison(baseline.correct(), tuned.correct(), resamples=settings.resamples, seed=settings.seed),
        "label_bias": {
            "accuracy": calibrated["methods"]["tuned+label_bias"]["accuracy"],
            "vs_baseline": calibrated["comparisons"]["tuned+label_bias vs baseline"],
            "vs_baseline_label_bias": calibrated["comparisons"]["tuned+label_bias vs baseline+label_bias"],
        },
    }


def _predictions(baseline: ScoredSplit, tuned: ScoredSplit) -> list[dict]:
    """Per test example: the answer, both models' predictions and greedy answers (-1 = invalid)."""
    baseline_predictions, tuned_predictions = baseline.predictions(), tuned.predictions()
    return [
        {
            "id": example_id,
            "answer": int(baseline.answers[index]),
            "baseline": int(baseline_predictions[index]),
            "tuned": int(tuned_predictions[index]),
            "baseline_greedy": int(baseline.greedy_answers[index]),
            "tuned_greedy": int(tuned.greedy_answers[index]),
        }
        for index, example_id in enumerate(baseline.example_ids)
    ]

