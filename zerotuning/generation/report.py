"""Baseline vs a profile on a generation test split: every measure with an interval, and paired comparisons."""

from __future__ import annotations

import numpy as np

from ..evaluation.bootstrap import bootstrap_mean_interval
from ..evaluation.mcnemar import mcnemar_exact
from ..evaluation.report import format_interval
from .degeneration import definition as degeneration_definition
from .records import GenerationScores

# Yes/no measures get McNemar's test; for these a larger value is better.
BINARY = ("exact_match", "contains", "regex_match", "empty", "repeats", "unfinished", "degenerate")
HIGHER_IS_BETTER = {"reference_log_likelihood": True, "exact_match": True, "contains": True, "regex_match": True,
                    "empty": False, "repeats": False, "unfinished": False, "degenerate": False,
                    "continuation_entropy": None, "generated_tokens": None}

NOTES = [
    "reference_log_likelihood: mean per-token log-probability (nats) of the best reference answer, teacher-forced, "
    "its end-of-turn token included.",
    "exact_match / contains / regex_match: on the greedy answer (KV cache, no sampling); exact_match and contains compare "
    "after folding case and accents, collapsing spaces and dropping surrounding punctuation, and contains needs whole words; "
    "regex_match searches the pattern in the answer as generated and counts only the examples that have a pattern.",
    "degenerate: empty, a repeated word loop, or no end of turn within the token budget (definitions under 'degeneration').",
    "continuation_entropy: mean next-token entropy (nats) over the model's own greedy answer (the unsupervised objective).",
    "Intervals: percentile bootstrap over test examples; differences are paired (tuned minus baseline, the same "
    "resampled examples); p-values: exact two-sided McNemar test on yes/no measures. These are judge-free measures "
    "of short answers: they say nothing about the quality of long free-form text.",
]


def compare_generation(baseline: GenerationScores, tuned: GenerationScores, *, resamples: int = 10_000, seed: int = 0) -> dict:
    """JSON-ready: per method the measures with intervals, and tuned - baseline per measure."""
    if baseline.example_ids != tuned.example_ids:
        raise ValueError("baseline, tuned: they must score the same examples in the same order")
    per_method = {"baseline": baseline.per_example(), "tuned": tuned.per_example()}
    methods = {name: _intervals(values, resamples, seed) for name, values in per_method.items()}
    differences = {}
    for measure, first in per_method["baseline"].items():
        second = per_method["tuned"][measure]
        kept = ~(np.isnan(first) | np.isnan(second))
        if not kept.any():
            continue
        row = {
            "difference": bootstrap_mean_interval(second[kept] - first[kept], resamples=resamples, seed=seed).to_json(),
            "examples": int(kept.sum()),
            "higher_is_better": HIGHER_IS_BETTER[measure],
        }
        if measure in BINARY:
            row["mcnemar"] = mcnemar_exact(first[kept] > 0.5, second[kept] > 0.5).to_json()
        differences[measure] = row
    return {
        "examples": len(baseline),
        "methods": methods,
        "tuned_vs_baseline": differences,
        "degeneration": degeneration_definition(),
        "notes": NOTES,
    }


def format_generation_table(comparison: dict) -> str:
    """Plain-text table: one line per measure, baseline and tuned with intervals, and the paired difference."""
    lines = [f"generation test examples: {comparison['examples']}",
             f"{'measure':<26} {'baseline [95% CI]':<26} {'tuned [95% CI]':<26} {'tuned - baseline':<28} McNemar p"]
    lines.append("-" * len(lines[-1]))
    for measure, row in comparison["tuned_vs_baseline"].items():
        if measure == "generated_tokens":
            continue
        p_value = f"{row['mcnemar']['p_value']:.4g}" if "mcnemar" in row else "-"
        lines.append(
            f"{measure:<26} {format_interval(comparison['methods']['baseline'][measure]):<26} "
            f"{format_interval(comparison['methods']['tuned'][measure]):<26} {format_interval(row['difference'], signed=True):<28} {p_value}"
        )
    return "\n".join(lines)


def _intervals(values: dict[str, np.ndarray], resamples: int, seed: int) -> dict:
    out = {}
    for measure, per_example in values.items():
        kept = per_example[~np.isnan(per_example)]
        out[measure] = bootstrap_mean_interval(kept, resamples=resamples, seed=seed).to_json() if kept.size else None
    return out
