"""Statistics and calibration baselines against independently computed values and synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from zerotuning.evaluation import (
    bootstrap_mean_interval,
    compare_on_test,
    expected_calibration_error,
    fit_label_bias,
    fit_temperature,
    format_table,
    label_bias_corrected,
    mcnemar_exact,
    negative_log_likelihood,
    temperature_scaled,
)
from zerotuning.scoring import ScoredSplit
from zerotuning.scoring.distributions import masked_log_softmax


def _pairs(only_first: int, only_second: int, both: int = 5, neither: int = 3):
    first = [True] * only_first + [False] * only_second + [True] * both + [False] * neither
    second = [False] * only_first + [True] * only_second + [True] * both + [False] * neither
    return np.array(first), np.array(second)


def test_mcnemar_exact_against_a_hand_computed_binomial_tail():
    result = mcnemar_exact(*_pairs(2, 8))
    # n = 10 discordant, min = 2: p = 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024
    assert result.p_value == 112 / 1024
    assert (result.only_first_correct, result.only_second_correct, result.both_correct, result.both_wrong) == (2, 8, 5, 3)
    assert mcnemar_exact(*_pairs(4, 4)).p_value == 1.0
    assert mcnemar_exact(*_pairs(0, 0)).p_value == 1.0
    assert mcnemar_exact(*_pairs(0, 6)).p_value == 2 / 64


@pytest.mark.parametrize(("only_first", "only_second"), [(1, 12), (30, 45), (170, 230), (7, 7)])
def test_mcnemar_exact_matches_scipy_binomtest(only_first, only_second):
    expected = stats.binomtest(only_first, only_first + only_second, 0.5).pvalue
    assert mcnemar_exact(*_pairs(only_first, only_second)).p_value == pytest.approx(expected, rel=1e-9)


def test_mcnemar_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="first_correct, second_correct"):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


def test_bootstrap_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    truth, covered, trials = 0.7, 0, 200
    for trial in range(trials):
        sample = rng.random(150) < truth
        interval = bootstrap_mean_interval(sample, resamples=800, seed=trial)
        assert interval.low <= interval.estimate <= interval.high
        covered += interval.low <= truth <= interval.high
    assert 0.90 <= covered / trials <= 0.99


def test_bootstrap_interval_width_matches_the_normal_approximation_and_is_seeded():
    sample = np.array([1.0] * 120 + [0.0] * 80)
    interval = bootstrap_mean_interval(sample, resamples=20_000, seed=1)
    half_width = 1.96 * math.sqrt(0.6 * 0.4 / 200)
    assert interval.estimate == 0.6
    assert (interval.high - interval.low) / 2 == pytest.approx(half_width, rel=0.08)
    assert bootstrap_mean_interval(sample, resamples=500, seed=3) == bootstrap_mean_interval(sample, resamples=500, seed=3)
    constant = bootstrap_mean_interval(np.ones(10), resamples=100)
    assert (constant.low, constant.high) == (1.0, 1.0)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        bootstrap_mean_interval(np.array([]))


def _synthetic(count: int, classes: int, seed: int, sharpness: float = 1.0, bias: np.ndarray | None = None):
    """Labels, and logits whose softmax is the true posterior (x sharpness), optionally shifted by a log-bias."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 1.5, (count, classes))
    probs = np.exp(true_logits - true_logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    answers = np.array([rng.choice(classes, p=row) for row in probs])
    logits = sharpness * true_logits + (0 if bias is None else np.log(bias)[None, :])
    return logits, answers


def test_temperature_scaling_recovers_the_overconfidence_factor_and_keeps_accuracy():
    logits, answers = _synthetic(6000, 4, seed=0, sharpness=3.0)
    mask = np.ones_like(logits, dtype=bool)
    temperature = fit_temperature(logits, mask, answers)
    assert temperature == pytest.approx(3.0, rel=0.06)
    raw, scaled = masked_log_softmax(logits, mask), temperature_scaled(logits, mask, temperature)
    assert (raw.argmax(1) == scaled.argmax(1)).all()
    assert negative_log_likelihood(scaled, answers) < negative_log_likelihood(raw, answers) - 0.1
    assert expected_calibration_error(scaled, answers) < 0.03 < expected_calibration_error(raw, answers)


def test_label_bias_calibration_removes_a_known_prior_and_recovers_accuracy():
    bias = np.array([6.0, 1.0, 1.0])
    logits, answers = _synthetic(6000, 3, seed=1, bias=bias)
    calibration_logits, test_logits = logits[:3000], logits[3000:]
    mask = np.ones_like(calibration_logits, dtype=bool)
    fitted = fit_label_bias(masked_log_softmax(calibration_logits, mask), mask)
    assert fitted[0] > 2 * fitted[1] and fitted[0] > 2 * fitted[2]
    test_answers = answers[3000:]
    biased = masked_log_softmax(test_logits, mask)
    corrected = label_bias_corrected(biased, mask, fitted)
    oracle = masked_log_softmax(test_logits - np.log(bias)[None, :], mask)
    accuracy = {name: (lp.argmax(1) == test_answers).mean() for name, lp in (("biased", biased), ("corrected", corrected), ("oracle", oracle))}
    assert accuracy["corrected"] > accuracy["biased"] + 0.05
    assert accuracy["corrected"] == pytest.approx(accuracy["oracle"], abs=0.03)


def test_label_bias_respects_options_an_example_does_not_offer():
    mask = np.array([[True, True, False], [True, True, True]])
    log_probs = masked_log_softmax(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, math.log(2)]]), mask)
    bias = fit_label_bias(log_probs, mask)
    assert bias.tolist() == pytest.approx([(0.5 + 0.25) / 2, (0.5 + 0.25) / 2, 0.5])
    corrected = label_bias_corrected(log_probs, mask, bias)
    assert np.isneginf(corrected[0, 2]) and np.exp(corrected).sum(1) == pytest.approx([1.0, 1.0])


def test_expected_calibration_error_on_a_hand_computed_example():
    # two examples at confidence 0.9 (one right), two at 0.6 (both right): ECE = 0.5*|0.5-0.9| + 0.5*|1-0.6| = 0.4
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    assert expected_calibration_error(np.log(probs), np.array([0, 1, 0, 1])) == pytest.approx(0.4)


def _scored(logits: np.ndarray, answers: np.ndarray, greedy: np.ndarray, prefix: str = "e") -> ScoredSplit:
    count = len(answers)
    return ScoredSplit(
        example_ids=tuple(f"{prefix}{i}" for i in range(count)),
        answers=answers,
        choice_mask=np.ones_like(logits, dtype=bool),
        answer_logits=logits.astype(np.float32),
        vocab_logsumexp=np.full(count, 5.0),
        vocab_entropy=np.full(count, 2.0),
        greedy_tokens=np.zeros(count, dtype=np.int64),
        greedy_answers=greedy,
    )


def test_compare_on_test_reports_every_method_and_consistent_comparisons():
    logits, answers = _synthetic(800, 2, seed=2, bias=np.array([10.0, 1.0]))
    better_logits = logits - np.log(np.array([10.0, 1.0]))[None, :]  # a "tuned" model without the bias
    invalid = np.where(np.arange(800) % 4 == 0, -1, answers)
    splits = {
        name: _scored(source[part], answers[part], invalid[part], prefix=str(part.start))
        for name, source, part in (
            ("baseline_cal", logits, slice(0, 400)), ("tuned_cal", better_logits, slice(0, 400)),
            ("baseline_test", logits, slice(400, 800)), ("tuned_test", better_logits, slice(400, 800)),
        )
    }
    result = compare_on_test(splits["baseline_test"], splits["tuned_test"], splits["baseline_cal"], splits["tuned_cal"], resamples=500, seed=0)
    methods = result["methods"]
    assert set(methods) == {"baseline", "baseline+temperature", "baseline+label_bias", "tuned", "tuned+temperature", "tuned+label_bias"}
    assert methods["baseline+temperature"]["accuracy"]["estimate"] == methods["baseline"]["accuracy"]["estimate"]
    assert methods["tuned"]["accuracy"]["estimate"] > methods["baseline"]["accuracy"]["estimate"]
    assert methods["baseline"]["invalid_rate"] == 0.25
    comparison = result["comparisons"]["tuned vs baseline"]
    tuned_correct = splits["tuned_test"].correct()
    baseline_correct = splits["baseline_test"].correct()
    assert comparison["accuracy_difference"]["estimate"] == pytest.approx(tuned_correct.mean() - baseline_correct.mean())
    assert comparison["mcnemar"] == mcnemar_exact(baseline_correct, tuned_correct).to_json()
    assert comparison["mcnemar"]["p_value"] < 0.01
    table = format_table(result)
    assert "baseline+label_bias" in table and "McNemar p=" in table
    with pytest.raises(ValueError, match="same test examples"):
        compare_on_test(splits["baseline_test"], splits["tuned_cal"], splits["baseline_cal"], splits["tuned_cal"])
