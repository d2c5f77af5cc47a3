"""The generation section of docs/RESULTS.md (used by make_results_md.py).

Reads ``<folder>/generation/<run>/results.json`` (``zerotuning tune`` on a generation task) and
``<folder>/collateral/<profile>.json`` (``zerotuning evaluate --profile P --also-generation TASK``
for the profiles tuned on the classification tasks). Every number comes from those files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from results_md_files import recorded

SIGNIFICANCE = 0.05
MODEL_ORDER = ("smollm2", "gemma3")
# Measures in the tables: (field, heading, percent?)
RATE_MEASURES = (("contains", "contains", True), ("exact_match", "exact match", True), ("regex_match", "pattern", True),
                 ("degenerate", "degenerate", True))


def is_generation_run(results: dict) -> bool:
    return results.get("task", {}).get("spec", {}).get("kind") == "generation"


def load_generation_runs(folder: Path) -> list[dict]:
    runs = []
    for path in recorded(folder / "generation", "*/results.json"):
        results = json.loads(path.read_text())
        if not is_generation_run(results):
            raise SystemExit(f"{path}: not a generation run (task kind {results.get('task', {}).get('spec', {}).get('kind')!r})")
        runs.append(dict(name=path.parent.name, path=path, results=results))
    return sorted(runs, key=lambda run: (_model_rank(run["results"]), run["results"]["task"]["name"], run["results"]["settings"]["objective"]["name"]))


def load_collateral(folder: Path) -> list[dict]:
    runs = []
    for path in recorded(folder / "collateral", "*.json"):
        if path.name.endswith("_predictions.json"):
            continue
        results = json.loads(path.read_text())
        if "also_generation" not in results:
            raise SystemExit(f"{path}: no also_generation field (not written by evaluate --also-generation)")
        runs.append(dict(name=path.stem, path=path, results=results))
    return sorted(runs, key=lambda run: (_model_rank(run["results"]), run["name"]))


def _model_rank(results: dict) -> tuple:
    spec = results["model"]["load"].get("spec", "")
    return (MODEL_ORDER.index(spec), "") if spec in MODEL_ORDER else (len(MODEL_ORDER), spec)


def _rate(interval: dict | None) -> str:
    return "-" if interval is None else f"{100 * interval['estimate']:.1f} [{100 * interval['low']:.1f}, {100 * interval['high']:.1f}]"


def _signed_rate(interval: dict) -> str:
    return f"{100 * interval['estimate']:+.1f} [{100 * interval['low']:+.1f}, {100 * interval['high']:+.1f}]"


def _nats(interval: dict) -> str:
    return f"{interval['estimate']:.2f} [{interval['low']:.2f}, {interval['high']:.2f}]"


def _signed_nats(interval: dict) -> str:
    return f"{interval['estimate']:+.2f} [{interval['low']:+.2f}, {interval['high']:+.2f}]"


def _selected_text(gamma: float, heads, total_heads: int) -> str:
    if gamma == 1:
        return "gamma 1 (untouched)"
    count = total_heads if heads in (None, "all") else len(heads)
    return f"gamma {gamma:g} on {'all ' if count == total_heads else ''}{count}{'' if count == total_heads else f'/{total_heads}'} heads"


def _total_heads(results: dict) -> int:
    identity = results["model"]["identity"]
    return identity["num_layers"] * identity["num_heads"]


def _measure_cells(test: dict) -> list[str]:
    """Per rate measure: baseline -> tuned, and the paired difference with McNemar p; then the log-likelihood."""
    methods, differences = test["methods"], test["tuned_vs_baseline"]
    cells = []
    for field, _, _ in RATE_MEASURES:
        if field not in differences:
            cells.append("-")
            continue
        row = differences[field]
        cells.append(
            f"{_rate(methods['baseline'][field])} -> {_rate(methods['tuned'][field])}; "
            f"{_signed_rate(row['difference'])}, p {row['mcnemar']['p_value']:.3g}"
        )
    likelihood = differences["reference_log_likelihood"]
    cells.append(f"{_nats(methods['baseline']['reference_log_likelihood'])} -> {_nats(methods['tuned']['reference_log_likelihood'])}; "
                 f"{_signed_nats(likelihood['difference'])}")
    return cells


def _header(first: list[str]) -> list[str]:
    headings = first + [heading + " (%): untouched -> tuned; diff, McNemar p" for _, heading, _ in RATE_MEASURES] + [
        "reference log-likelihood (nats/token): untouched -> tuned; diff"]
    return ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]


def tuning_table(runs: list[dict]) -> list[str]:
    lines = _header(["model", "task", "objective", "selected", "examples (calibration / test)"])
    for run in runs:
        r = run["results"]
        selected = r["selected"]
        lines.append(
            f"| {r['model']['load']['spec']} | {r['task']['name']} | {r['settings']['objective']['name']} "
            f"| L{selected['level']}: {_selected_text(selected['gamma'], selected['heads'], _total_heads(r))} "
            f"| {r['splits']['calibration']} / {r['splits']['test']} | " + " | ".join(_measure_cells(r["test"])) + " |"
        )
    return lines


def collateral_table(runs: list[dict]) -> list[str]:
    lines = _header(["profile (model-task-objective)", "profile", "own task: tuned + label bias vs untouched", "generation task (test examples)"])
    for run in runs:
        r, also = run["results"], run["results"]["also_generation"]
        record = r["profile"]["metadata"]["zerotuning"]
        own = r["test"]["comparisons"]["tuned+label_bias vs baseline"]
        lines.append(
            f"| {run['name']} | {_selected_text(record['gamma'], record['heads'], _total_heads(r))} "
            f"| {_signed_rate(own['accuracy_difference'])}, p {own['mcnemar']['p_value']:.3g} "
            f"| {also['task']['name']} ({also['test']['examples']}) | " + " | ".join(_measure_cells(also["test"])) + " |"
        )
    return lines


def _significant_changes(test: dict) -> list[str]:
    changes = []
    for field, heading, _ in RATE_MEASURES:
        row = test["tuned_vs_baseline"].get(field)
        if row and "mcnemar" in row and row["mcnemar"]["p_value"] < SIGNIFICANCE:
            changes.append(f"{heading} {100 * row['difference']['estimate']:+.1f} points")
    return changes


def _contains_change(test: dict) -> str:
    return _signed_rate(test["tuned_vs_baseline"]["contains"]["difference"])


def verdict_lines(runs: list[dict], collateral: list[dict]) -> list[str]:
    lines = []
    if runs:
        changed = [(run, _significant_changes(run["results"]["test"])) for run in runs]
        untouched = [run for run in runs if run["results"]["selected"]["gamma"] == 1]
        better = [run for run, changes in changed if changes]
        lines.append(
            f"Tuned on the generation task itself ({_count(len(runs), 'run')}): the search kept the untouched model in {len(untouched)}; "
            + (f"a yes/no measure changed significantly (McNemar p < {SIGNIFICANCE}) on test in "
               + "; ".join(f"{run['name']} ({', '.join(changes)})" for run, changes in changed if changes) + "."
               if better else f"no yes/no measure (contains, exact match, pattern, degenerate) changed significantly on test "
               f"(McNemar p < {SIGNIFICANCE}) in any run.")
            + " Change of `contains` (tuned - untouched, points, 95% interval): "
            + "; ".join(f"{run['name']} {_contains_change(run['results']['test'])}" for run in runs) + "."
        )
    if collateral:
        changed = [(run, _significant_changes(run["results"]["also_generation"]["test"])) for run in collateral]
        lines += [
            "",
            f"Collateral damage ({_count(len(collateral), 'profile')} tuned on classification tasks, judged on generation): "
            + ("; ".join(f"{run['name']}: {', '.join(changes)}" for run, changes in changed if changes) + " (McNemar p < "
               f"{SIGNIFICANCE}); the others changed no yes/no measure significantly. "
               if any(changes for _, changes in changed) else
               f"no profile changed a yes/no measure significantly (McNemar p < {SIGNIFICANCE}). ")
            + "Change of `contains` (points): "
            + "; ".join(f"{run['name']} {_contains_change(run['results']['also_generation']['test'])}" for run in collateral) + ".",
        ]
    return lines


def untouched_profiles_line(classification_runs: list[dict]) -> list[str]:
    """The default's profiles that keep gamma 1 everywhere: they cannot change generation, so they have no collateral run."""
    names = [run["name"].split("/")[-1] for run in classification_runs
             if run["results"]["settings"]["tuning"].get("search") == "budgeted" and run["results"]["selected"]["gamma"] == 1]
    if not names:
        return []
    return ["", "Profiles of the default runs that keep gamma 1 on every head (the untouched model, so no generation "
            "change is possible and no collateral run was made): " + ", ".join(f"`{name}`" for name in names) + "."]


def settings_lines(runs: list[dict], collateral: list[dict]) -> list[str]:
    lines = []
    if runs:
        s = runs[0]["results"]["settings"]
        tuning, generation = s["tuning"], s["generation"]
        formats = sorted({f"{run['results']['model']['load']['spec']}: {run['results']['task']['prompt_format']['name']}" for run in runs})
        sources = sorted({_caps_text(run["results"]["task"]["source"]["splits"].get("max_examples") or {}) for run in runs})
        lines += [
            f"- Tuning runs: `--search levels`, levels {', '.join(map(str, tuning['levels']))} (Level 0: gamma "
            f"{tuning['fixed_gamma']:g} on every head; Level 1: the grid {', '.join(f'{g:g}' for g in tuning['gammas'])} on every "
            f"head); split sizes: {'; '.join(sources)}; supervised = mean reference log-likelihood on the "
            "calibration split, unsupervised = minus the mean next-token entropy of the model's own greedy answers.",
            f"- Greedy answers, KV cache, at most {generation['max_new_tokens']} new tokens; `--chat-template "
            f"{generation['chat_template']}` resolved to {', '.join(formats)}; shots {s['shots']}, seed {s['seeds']['splits']}, "
            f"{s['bootstrap_resamples']} bootstrap resamples, 95% intervals, paired differences (tuned - untouched).",
        ]
    if collateral:
        sizes = sorted({run["results"]["also_generation"]["test"]["examples"] for run in collateral})
        lines.append(
            "- Collateral runs: `zerotuning evaluate --profile docs/results/budgeted/<profile> --also-generation "
            f"<task> --max-generation-test {', '.join(map(str, sizes))}` (zero-shot on the generation task, the same measures). "
            "Their seeded subsample of the test split is drawn without the tuning runs' calibration cap, so it is not the "
            "same set of examples, and their untouched rates differ from the tuning runs'."
        )
    lines.append(
        "- contains: a reference appears as whole words (case and accents folded); exact match: the whole answer is a "
        "reference; pattern: the row's regular expression (the last number is the result; a chemical symbol with its case), "
        "over the examples that have one; degenerate: empty, a repeated 2-word loop, or no end of turn within the budget."
    )
    return lines


TUNING_FILES = ("results.json", "profile.json", "predictions.json", "metric_vs_gamma.png")


def _caps_text(caps: dict) -> str:
    return ", ".join(f"{split} capped at {count} (seeded subsample)" for split, count in sorted(caps.items())) or "the whole splits"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def files_lines(runs: list[dict], collateral: list[dict], page: Path) -> list[str]:
    """Links to each run's files, relative to the page."""
    lines = []
    for run in runs:
        folder = run["path"].parent
        links = [f"[{name}]({Path(os.path.relpath(folder / name, page.parent)).as_posix()})" for name in TUNING_FILES if (folder / name).is_file()]
        lines.append(f"- `generation/{run['name']}`: " + ", ".join(links))
    for run in collateral:
        paths = [run["path"], *sorted(run["path"].parent.glob(run["path"].stem + "_*predictions.json"))]
        links = [f"[{path.name}]({Path(os.path.relpath(path, page.parent)).as_posix()})" for path in paths]
        lines.append(f"- `collateral/{run['name']}`: " + ", ".join(links))
    return lines


def generation_section(folder: Path, page: Path, classification_runs: list[dict]) -> list[str]:
    runs, collateral = load_generation_runs(folder), load_collateral(folder)
    if not runs and not collateral:
        return []
    lines = ["## Generation tasks (judge-free measures of short answers)", "",
             "`contains` is the measure to read first: these small models tend to answer in a sentence (\"The capital of "
             "Japan is Tokyo.\"), which exact match counts as wrong. The reference log-likelihood scores the bare reference "
             "right after the prompt, so it also rewards answering tersely.", "", *verdict_lines(runs, collateral), ""]
    if runs:
        lines += ["### Tuned on the generation task (test split)", "", *tuning_table(runs), ""]
    if collateral:
        lines += ["### Collateral damage: profiles tuned on the classification tasks, judged on generation", "",
                  *collateral_table(collateral), *untouched_profiles_line(classification_runs), ""]
    lines += ["### Settings of the generation runs", "", *settings_lines(runs, collateral), "",
              "### Generation run files", "", *files_lines(runs, collateral, page), ""]
    return lines
