"""Paired comparison of two lm-eval runs written with ``--log_samples``, per task and per metric.

A run is lm-eval's ``results_<date>.json`` (or a folder holding exactly one) with the
``samples_<task>_<date>.jsonl`` files written beside it. Samples are matched by
``(doc_id, filter)``; runs whose tasks, documents or targets differ are refused, naming the files.
For each metric that lm-eval aggregates as the mean of one number per sample: both runs' means
with bootstrap intervals, the paired bootstrap interval of the difference (B - A), and for 0/1
metrics (acc, exact_match, ...) the exact McNemar test (``zerotuning.evaluation``). Other metrics
(perplexities, BLEU: corpus-level aggregates) are listed as not compared, with the reason. Needs
no lm-eval install.
"""

from __future__ import annotations

import json
import numbers
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation import bootstrap_mean_interval, paired_comparison
from ..evaluation.report import format_interval

# lm-eval names its files with datetime.now().isoformat() with ":" replaced by "-".
_DATE_ID = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?)\.json$")

NOTES = [
    "B - A: the second run's mean minus the first run's, per metric, on the same samples (matched by doc_id and filter).",
    "Intervals: percentile bootstrap over samples; the difference is paired (the same resampled samples for both runs).",
    "McNemar: exact two-sided test on the samples where exactly one run scores 1 (0/1 metrics only).",
]


@dataclass(frozen=True)
class LoggedRun:
    """One lm-eval run: its results file, the parsed results, and the samples file of each task."""

    results_file: Path
    results: dict
    samples_files: dict[str, Path]


def find_run(path: str | Path) -> LoggedRun:
    """The run at ``path``: a ``results_<date>.json`` file, or a folder holding exactly one (searched recursively)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.rglob("results_*.json"))
        if len(found) != 1:
            listing = ", ".join(str(p) for p in found) if found else "none"
            raise ValueError(f"run {str(path)!r}: expected a folder with exactly one lm-eval results_*.json, found {listing}; pass the results file")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"run {str(path)!r}: no such results file or folder")
    date = _DATE_ID.search(path.name)
    if date is None:
        raise ValueError(f"run {str(path)!r}: not an lm-eval results file (expected a name ending in _<date>.json, as lm-eval writes)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"run {str(path)!r} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"run {str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(results, dict):
        raise ValueError(f"run {str(path)!r}: expected a JSON object (lm-eval's results file), got {type(results).__name__}")
    tasks = sorted((results.get("configs") or {}))
    if not tasks:
        raise ValueError(f"run {str(path)!r}: no task configurations in it; expected lm-eval's results file")
    samples_files = {task: path.parent / f"samples_{task}_{date.group(1)}.jsonl" for task in tasks}
    missing = [str(file) for file in samples_files.values() if not file.is_file()]
    if missing:
        raise FileNotFoundError(f"run {str(path)!r}: samples files {missing} do not exist; was the run written with --log_samples?")
    return LoggedRun(results_file=path, results=results, samples_files=samples_files)


def compare_runs(run_a: LoggedRun, run_b: LoggedRun, *, resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> dict:
    """The JSON-ready comparison of ``run_b`` against ``run_a`` (see the module docstring)."""
    if set(run_a.samples_files) != set(run_b.samples_files):
        raise ValueError(
            f"runs {str(run_a.results_file)!r} and {str(run_b.results_file)!r} evaluate different tasks: "
            f"{sorted(run_a.samples_files)} vs {sorted(run_b.samples_files)}"
        )
    tasks = {}
    for task in sorted(run_a.samples_files):
        file_a, file_b = run_a.samples_files[task], run_b.samples_files[task]
        pairs = _matched_samples(_read_samples(file_a), _read_samples(file_b), file_a, file_b)
        reported = (run_a.results.get("results", {}).get(task, {}), run_b.results.get("results", {}).get(task, {}))
        tasks[task] = _compare_task(pairs, reported, resamples=resamples, seed=seed, level=level) | {
            "samples_files": [str(file_a), str(file_b)]
        }
    return {
        "run_a": _describe(run_a),
        "run_b": _describe(run_b),
        "settings": {"resamples": resamples, "seed": seed, "level": level},
        "tasks": tasks,
        "notes": NOTES,
    }


def format_comparison(comparison: dict) -> str:
    """A plain-text table: one line per task and metric."""
    header = f"{'task':<24} {'metric':<22} {'n':>5}  {'A [95% CI]':<22} {'B [95% CI]':<22} {'B - A [95% CI]':<26} McNemar p (B+/A+)"
    lines = [f"A: {comparison['run_a']['label']}", f"B: {comparison['run_b']['label']}", header, "-" * len(header)]
    for task, result in comparison["tasks"].items():
        for metric, row in result["metrics"].items():
            test = row.get("mcnemar")
            mcnemar = f"{test['p_value']:.4g} ({test['only_second_correct']}/{test['only_first_correct']})" if test else "-"
            lines.append(
                f"{task:<24} {metric:<22} {result['samples']:>5}  {format_interval(row['a']):<22} {format_interval(row['b']):<22} "
                f"{format_interval(row['difference'], signed=True):<26} {mcnemar}"
            )
        for metric, reason in result["not_compared"].items():
            lines.append(f"{task:<24} {metric:<22} {result['samples']:>5}  not compared: {reason}")
    return "\n".join(lines)


def _read_samples(path: Path) -> dict[tuple[int, str], dict]:
    samples: dict[tuple[int, str], dict] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"samples file {str(path)!r} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
            key = (int(sample["doc_id"]), str(sample["filter"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"samples file {str(path)!r}, line {number}: not an lm-eval sample record ({error})") from None
        if key in samples:
            raise ValueError(f"samples file {str(path)!r}, line {number}: doc_id {key[0]} with filter {key[1]!r} appears twice")
        samples[key] = sample
    if not samples:
        raise ValueError(f"samples file {str(path)!r} holds no samples")
    return samples


def _matched_samples(samples_a: dict, samples_b: dict, file_a: Path, file_b: Path) -> list[tuple[dict, dict]]:
    """The samples of both runs in doc_id order; refuses runs whose samples are not the same documents."""
    only_a, only_b = sorted(set(samples_a) - set(samples_b)), sorted(set(samples_b) - set(samples_a))
    if only_a or only_b:
        raise ValueError(
            f"samples do not match: {str(file_a)!r} has {len(samples_a)} and {str(file_b)!r} has {len(samples_b)} "
            f"(doc_id, filter) pairs; only in the first: {only_a[:5]}{' ...' if len(only_a) > 5 else ''}, "
            f"only in the second: {only_b[:5]}{' ...' if len(only_b) > 5 else ''} (were both run with the same --limit / --samples?)"
        )
    for key in sorted(samples_a):
        for field in ("doc_hash", "target_hash"):
            if samples_a[key].get(field) != samples_b[key].get(field):
                raise ValueError(
                    f"samples do not match: doc_id {key[0]} (filter {key[1]!r}) has a different {field} in {str(file_a)!r} "
                    f"and {str(file_b)!r}; the runs did not evaluate the same documents"
                )
        if samples_a[key].get("metrics") != samples_b[key].get("metrics"):
            raise ValueError(
                f"samples do not match: doc_id {key[0]} is scored with metrics {samples_a[key].get('metrics')} in "
                f"{str(file_a)!r} but {samples_b[key].get('metrics')} in {str(file_b)!r}"
            )
    return [(samples_a[key], samples_b[key]) for key in sorted(samples_a)]


def _compare_task(pairs: list[tuple[dict, dict]], reported: tuple[dict, dict], *, resamples: int, seed: int, level: float) -> dict:
    metrics: dict[str, dict] = {}
    not_compared: dict[str, str] = {}
    filters = sorted({a["filter"] for a, _ in pairs})
    for filter_name in filters:
        rows = [(a, b) for a, b in pairs if a["filter"] == filter_name]
        for metric in rows[0][0].get("metrics", []):
            name = f"{metric},{filter_name}"
            values_a = [a.get(metric) for a, _ in rows]
            values_b = [b.get(metric) for _, b in rows]
            if not all(_is_number(value) for value in values_a + values_b):
                example = next(value for value in values_a + values_b if not _is_number(value))
                not_compared[name] = f"per-sample values like {json.dumps(example)[:40]} are not numbers (a corpus-level metric)"
                continue
            a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
            reported_a, reported_b = reported[0].get(name), reported[1].get(name)
            if not (_is_mean(reported_a, a) and _is_mean(reported_b, b)):
                not_compared[name] = (
                    f"lm-eval reports {reported_a!r} and {reported_b!r}, not the means of the per-sample values "
                    f"({a.mean():.6g} and {b.mean():.6g}): an aggregate that is not a mean over samples"
                )
                continue
            binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
            row = {
                "kind": "binary" if binary else "continuous",
                "a": bootstrap_mean_interval(a, resamples=resamples, level=level, seed=seed).to_json(),
                "b": bootstrap_mean_interval(b, resamples=resamples, level=level, seed=seed).to_json(),
            }
            if binary:
                paired = paired_comparison(a.astype(bool), b.astype(bool), resamples=resamples, seed=seed)
                row["difference"], row["mcnemar"] = paired["accuracy_difference"], paired["mcnemar"]
            else:
                row["difference"] = bootstrap_mean_interval(b - a, resamples=resamples, level=level, seed=seed).to_json()
            metrics[name] = row
    return {
        "samples": len({a["doc_id"] for a, _ in pairs}),
        "prompts_differ": sum(a.get("prompt_hash") != b.get("prompt_hash") for a, b in pairs),
        "metrics": metrics,
        "not_compared": not_compared,
    }


def _describe(run: LoggedRun) -> dict:
    zerotuning = run.results.get("zerotuning") or {}
    model_args = (run.results.get("config") or {}).get("model_args")
    label = str(run.results_file)
    if zerotuning:
        label += f" (profile: {zerotuning.get('profile_source') or 'in memory'})"
    return {"results_file": str(run.results_file), "model_args": model_args, "profile_source": zerotuning.get("profile_source"), "label": label}


def _is_mean(reported, values: np.ndarray) -> bool:
    """Whether lm-eval's reported aggregate is the mean of the per-sample values (so a paired mean difference is its difference)."""
    return _is_number(reported) and abs(float(reported) - float(values.mean())) <= 1e-9 + 1e-6 * abs(float(reported))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and np.isfinite(value)
