"""Baseline vs tuned on the test split: intervals, paired tests, invalid rates and calibration baselines."""

from __future__ import annotations

import numpy as np

from ..scoring.records import ScoredSplit
from .bootstrap import bootstrap_mean_interval
from .calibration import (
    expected_calibration_error,
    fit_label_bias,
    fit_temperature,
    label_bias_corrected,
    negative_log_likelihood,
    temperature_scaled,
)
from .mcnemar import mcnemar_exact

NOTES = [
    "Accuracy: the offered answer with the highest probability at the answer position (answer-token likelihood).",
    "Greedy accuracy / invalid rate: the paper's way - the single most likely next token over the whole vocabulary, "
    "parsed as an answer; a token naming no offered answer is invalid and counts as wrong.",
    "Temperature scaling cannot change the most likely answer, so its accuracy equals the uncalibrated one; "
    "its NLL and ECE show how much of the model's miscalibration one temperature fixes.",
    "Label-bias calibration divides the answer distribution by the mean answer distribution over the calibration "
    "inputs; it can change accuracy. Both baselines are fitted on the calibration split only.",
    "Intervals: percentile bootstrap over test examples; differences are paired (the same resampled examples). "
    "p-values: exact two-sided McNemar test on the discordant examples.",
]


def compare_on_test(
    baseline_test: ScoredSplit,
    tuned_test: ScoredSplit,
    baseline_calibration: ScoredSplit,
    tuned_calibration: ScoredSplit,
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict:
    """The JSON-ready comparison; calibration baselines are fitted per model on its calibration scores."""
    if baseline_test.example_ids != tuned_test.example_ids:
        raise ValueError("baseline_test, tuned_test: they must score the same test examples in the same order")
    answers = baseline_test.answers
    methods: dict[str, dict] = {}
    correct: dict[str, np.ndarray] = {}
    for name, test, calibration in (("baseline", baseline_test, baseline_calibration), ("tuned", tuned_test, tuned_calibration)):
        variants = _calibrated_variants(test, calibration)
        for suffix, (log_probs, extra) in variants.items():
            method = name + suffix
            correct[method] = log_probs.argmax(axis=-1) == answers
            methods[method] = {
                "accuracy": bootstrap_mean_interval(correct[method], resamples=resamples, seed=seed).to_json(),
                "nll": negative_log_likelihood(log_probs, answers),
                "ece": expected_calibration_error(log_probs, answers),
                **extra,
            }
        correct[name + " (greedy)"] = test.greedy_correct()
        methods[name].update(
            {
                "greedy_accuracy": bootstrap_mean_interval(test.greedy_correct(), resamples=resamples, seed=seed).to_json(),
                "invalid_rate": float((test.greedy_answers < 0).mean()),
                "mean_answer_entropy": test.mean_answer_entropy(),
                "mean_vocab_entropy": test.mean_vocab_entropy(),
            }
        )
    comparisons = {
        f"{second} vs {first}": paired_comparison(correct[first], correct[second], resamples=resamples, seed=seed)
        for first, second in (
            ("baseline", "tuned"),
            ("baseline", "tuned+label_bias"),
            ("baseline (greedy)", "tuned (greedy)"),
            ("baseline+label_bias", "tuned"),
            ("baseline+label_bias", "tuned+label_bias"),
        )
    }
    return {"examples": len(answers), "methods": methods, "comparisons": comparisons, "notes": NOTES}


def format_table(comparison: dict) -> str:
    """A plain-text table of the methods and the paired comparisons."""
    header = f"{'method':<22} {'accuracy [95% CI]':<26} {'greedy acc':>10} {'invalid':>8} {'NLL':>8} {'ECE':>7}"
    lines = [f"test examples: {comparison['examples']}", header, "-" * len(header)]
    for name, method in comparison["methods"].items():
        greedy = f"{method['greedy_accuracy']['estimate']:.3f}" if "greedy_accuracy" in method else "-"
        invalid = f"{method['invalid_rate']:.3f}" if "invalid_rate" in method else "-"
        lines.append(f"{name:<22} {format_interval(method['accuracy']):<26} {greedy:>10} {invalid:>8} {method['nll']:>8.4f} {method['ece']:>7.4f}")
    lines.append("")
    for name, comparison_row in comparison["comparisons"].items():
        test = comparison_row["mcnemar"]
        lines.append(
            f"{name:<42} diff {format_interval(comparison_row['accuracy_difference'], signed=True):<28} "
            f"McNemar p={test['p_value']:.4g} (discordant: {test['only_second_correct']} for, {test['only_first_correct']} against)"
        )
    return "\n".join(lines)


def _calibrated_variants(test: ScoredSplit, calibration: ScoredSplit) -> dict[str, tuple[np.ndarray, dict]]:
    temperature = fit_temperature(calibration.answer_logits, calibration.choice_mask, calibration.answers)
    bias = fit_label_bias(calibration.answer_log_probs(), calibration.choice_mask)
    return {
        "": (test.answer_log_probs(), {}),
        "+temperature": (temperature_scaled(test.answer_logits, test.choice_mask, temperature), {"temperature": temperature}),
        "+label_bias": (label_bias_corrected(test.answer_log_probs(), test.choice_mask, bias), {"label_bias": bias.tolist()}),
    }


def paired_comparison(first: np.ndarray, second: np.ndarray, *, resamples: int = 10_000, seed: int = 0) -> dict:
    """Second minus first accuracy on the same examples: a paired bootstrap interval and the exact McNemar test."""
    difference = second.astype(np.float64) - first.astype(np.float64)
    return {
        "accuracy_difference": bootstrap_mean_interval(difference, resamples=resamples, seed=seed).to_json(),
        "mcnemar": mcnemar_exact(first, second).to_json(),
    }


def format_interval(interval: dict, signed: bool = False) -> str:
    """``estimate [low, high]`` with three decimals (a sign on each with ``signed``)."""
    sign = "+" if signed else ""
    return f"{interval['estimate']:{sign}.3f} [{interval['low']:{sign}.3f}, {interval['high']:{sign}.3f}]"
