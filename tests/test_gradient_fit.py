"""Level 3 (per-head gammas fitted by gradient steps) on tiny random models: the fit, its prior, its held-out fold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zerotuning.hf import apply, remove
from zerotuning.profile import Profile
from zerotuning.scoring import CostLedger, Scorer, prepare_task
from zerotuning.tasks import SplitPlan, TaskRequest, load_task
from zerotuning.tuning import CandidateSpace, TuningConfig
from zerotuning.tuning.experiment import RunSettings, run_tuning
from zerotuning.tuning.fit_settings import FitSettings, held_out_fold
from zerotuning.tuning.gradient_fit import fit_log_gammas
from zerotuning.tuning.objectives import make_objective

from scoring_support import sentiment_rows, tiny_lm, word_tokenizer, write_jsonl


def one_label_rows(count: int) -> list[dict]:
    """Every answer 'positive': raising that answer's mass, whatever the text, helps every example (fit and held out)."""
    return [{**row, "label": "positive"} for row in sentiment_rows(count, seed=7)]


@pytest.fixture(scope="module")
def one_label(tmp_path_factory):
    path = write_jsonl(one_label_rows(40), tmp_path_factory.mktemp("data") / "positive.jsonl")
    task = load_task(TaskRequest(source=str(path), labels=("negative", "positive"), splits=SplitPlan(fractions={"demo": 0.1, "calibration": 0.5, "test": 0.4})))
    tokenizer = word_tokenizer()
    return tokenizer, prepare_task(task, tokenizer, shots=1, seed=0)


def mean_answer_log_likelihood(model, scorer, scoring_set, profile) -> float:
    apply(model, profile)
    scored = scorer.score(scoring_set, "check")
    return float(scored.vocab_log_probs()[np.arange(len(scored)), scored.answers].mean())


def fit(model, tokenizer, prepared, settings, layers=None, ledger=None):
    ledger = ledger or CostLedger()
    scorer = Scorer(model, tokenizer, prepared.answer_tokens, batch_size=8, ledger=ledger)
    space = CandidateSpace.for_model(model, layers)
    with ledger.stage("fit"):
        profile, record = fit_log_gammas(model, scorer, prepared.sets["calibration"], make_objective("supervised"), space, settings, ledger, seed=0)
    return scorer, space, profile, record


def test_the_fit_lowers_the_calibration_loss_and_touches_only_the_tunable_layers(one_label):
    tokenizer, prepared = one_label
    model = tiny_lm(tokenizer)
    ledger = CostLedger()
    calibration = prepared.sets["calibration"]
    try:
        scorer, space, profile, record = fit(model, tokenizer, prepared, FitSettings(steps=6, learning_rate=0.3, prior=0.0), layers=(1,), ledger=ledger)
        before = mean_answer_log_likelihood(model, scorer, calibration, space.neutral())
        after = mean_answer_log_likelihood(model, scorer, calibration, profile)
    finally:
        remove(model)
    assert record["best_step"] > 0 and record["held_out_losses"][record["best_step"]] < record["held_out_losses"][0]
    assert record["fit_losses"][-1] < record["fit_losses"][0]
    assert after > before + 1e-3  # the whole calibration split's cross-entropy went down
    assert profile.gammas[0] == [1.0] * space.num_heads  # layer 0 is not tunable
    assert any(abs(math.log(gamma)) > 0.05 for gamma in profile.gammas[1])
    assert all(parameter.grad is None and parameter.requires_grad for parameter in model.parameters())
    fit_batches = math.ceil(record["fit_examples"] / 8)
    held_batches = math.ceil(record["held_out_examples"] / 8)
    steps = record["steps_run"]
    cost = ledger.stages["fit"]
    assert (cost.forward_passes, cost.backward_passes) == (steps * fit_batches + (steps + 1) * held_batches, steps * fit_batches)
    assert record["fit_examples"] + record["held_out_examples"] == len(calibration.example_ids)
    assert len(record["held_out_losses"]) == steps + 1 and len(record["fit_losses"]) == steps


def test_the_prior_pulls_towards_gamma_1_and_at_infinite_strength_keeps_it(one_label):
    tokenizer, prepared = one_label
    model = tiny_lm(tokenizer)
    spreads = {}
    try:
        for prior in (0.0, 1.0, math.inf):
            _, _, profile, record = fit(model, tokenizer, prepared, FitSettings(steps=3, learning_rate=0.3, prior=prior))
            spreads[prior] = max(abs(math.log(gamma)) for row in profile.gammas for gamma in row)
            if prior == math.inf:
                assert profile.gammas == Profile.neutral(model).gammas and record["best_step"] == 0 and record["prior"] == "inf"
    finally:
        remove(model)
    assert spreads[0.0] > spreads[1.0] > spreads[math.inf] == 0.0


def test_early_stopping_uses_only_the_calibration_split(tmp_path):
    """Two tasks with the same demo and calibration rows but different test rows fit identically."""
    rows = sentiment_rows(48, seed=5)
    splits = ["demo"] * 4 + ["calibration"] * 24 + ["test"] * 20
    tokenizer = word_tokenizer()
    fits = []
    for variant in range(2):
        # The second variant's test rows have other texts and flipped labels: a leak into the held-out fold would show.
        labelled = [
            {**row, "split": split, **({"label": "negative" if row["label"] == "positive" else "positive", "text": row["text"] + " very very"} if split == "test" and variant else {})}
            for row, split in zip(rows, splits)
        ]
        path = write_jsonl(labelled, tmp_path / f"variant{variant}.jsonl")
        task = load_task(TaskRequest(source=str(path), splits=SplitPlan(column="split")))
        model = tiny_lm(tokenizer)
        settings = RunSettings(shots=1, layers=(0, 1), tuning=TuningConfig(search="levels", levels=(3,), fit_steps=4, fit_learning_rate=0.3, fit_prior=0.0), resamples=50)
        results, tuning = run_tuning(model, tokenizer, task, settings, {})
        fits.append((results["tuning"]["levels"]["3"]["fit"], tuning.levels[3].profile.gammas))
    (first, gammas_first), (second, gammas_second) = fits
    assert first["held_out_losses"] == second["held_out_losses"] and first["fit_losses"] == second["fit_losses"]
    assert first["best_step"] == second["best_step"] and gammas_first == gammas_second
    calibration_ids = {row["id"] for row, split in zip(rows, splits) if split == "calibration"}
    assert set(first["held_out_ids"]) <= calibration_ids and len(first["held_out_ids"]) == 6
    assert first["steps_run"] >= 1


def test_held_out_fold_and_settings_are_checked():
    fit_part, held = held_out_fold(10, seed=3)
    assert len(held) == 2
    assert sorted([*fit_part, *held]) == list(range(10)) and not set(fit_part) & set(held)
    assert (held == held_out_fold(10, seed=3)[1]).all() and not (held_out_fold(40, seed=3)[1] == held_out_fold(40, seed=4)[1]).all()
    with pytest.raises(ValueError, match="at least 2 examples"):
        held_out_fold(1, seed=0)
    for kwargs, message in (({"steps": 0}, "fit_steps"), ({"learning_rate": math.nan}, "fit_learning_rate"), ({"prior": -1.0}, "fit_prior"), ({"prior": math.nan}, "fit_prior")):
        with pytest.raises(ValueError, match=message):
            FitSettings(**kwargs)
    with pytest.raises(ValueError, match="level 3 needs fit_gammas"):
        from zerotuning.tuning import tune

        tune(None, None, None, TuningConfig(search="levels", levels=(3,)), CostLedger(), None)
