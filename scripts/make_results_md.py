"""Writes docs/RESULTS.md from the results.json files of `zerotuning tune` runs.

    python scripts/make_results_md.py runs/results --out docs/RESULTS.md

Every number in the page comes from those files; the page says how they were produced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

SIGNIFICANCE = 0.05
# Table order: the default model and the classification task first; unknown names after, by name.
MODEL_ORDER = ("smollm2", "gemma3")
TASK_ORDER = ("sentiment", "capitals", "elements")
RUN_FILES = ("results.json", "profile.json", "metric_vs_gamma.png", "head_effects.png")


def load_runs(folder: Path) -> list[dict]:
    runs = []
    for path in sorted(folder.glob("*/results.json")):
        with open(path) as f:
            runs.append(dict(name=path.parent.name, results=json.load(f)))
    if not runs:
        raise SystemExit(f"{folder}: no */results.json found (run scripts/run_results_matrix.py first)")
    return sorted(runs, key=run_order)


def run_order(run: dict) -> tuple:
    d = describe(run)

    def rank(name: str, order: tuple) -> tuple:
        return (order.index(name), "") if name in order else (len(order), name)

    return (*rank(d["model"], MODEL_ORDER), *rank(d["task"], TASK_ORDER), d["objective"])


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def interval(i: dict) -> str:
    return f"{pct(i['estimate'])} [{pct(i['low'])}, {pct(i['high'])}]"


def signed_interval(i: dict) -> str:
    return f"{100 * i['estimate']:+.1f} [{100 * i['low']:+.1f}, {100 * i['high']:+.1f}]"


def heads_text(level: dict, total_heads: int) -> str:
    if level["heads"] == "all":
        return f"all {total_heads}"
    return f"{level['head_count']}/{total_heads}"


def describe(run: dict) -> dict:
    r = run["results"]
    identity = r["model"]["identity"]
    settings = r["settings"]
    return dict(
        model=r["model"]["load"].get("spec", identity["model_type"]),
        task=r["task"]["name"],
        objective=settings["objective"]["name"]
        + (f" ({settings['objective']['entropy_over']})" if settings["objective"]["name"] == "unsupervised" else ""),
        heads=identity["num_layers"] * identity["num_heads"],
    )


def summary_table(runs: list[dict]) -> list[str]:
    lines = [
        "| model | task | objective | baseline acc | selected | tuned acc | difference | McNemar p "
        "| invalid (greedy) | label-bias baseline | tuned + label bias | passes | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        r, d = run["results"], describe(run)
        methods = r["test"]["methods"]
        selected_level = r["tuning"]["selected_level"]
        level = r["tuning"]["levels"][str(selected_level)]
        comparison = r["test"]["comparisons"]["tuned vs baseline"]
        cost = r["cost"]["total"]
        lines.append(
            f"| {d['model']} | {d['task']} | {d['objective']} | {interval(methods['baseline']['accuracy'])} "
            f"| L{selected_level}: gamma {level['gamma']:g} on {heads_text(level, d['heads'])} "
            f"| {interval(methods['tuned']['accuracy'])} | {signed_interval(comparison['accuracy_difference'])} "
            f"| {comparison['mcnemar']['p_value']:.3g} "
            f"| {pct(methods['baseline']['invalid_rate'])} -> {pct(methods['tuned']['invalid_rate'])} "
            f"| {pct(methods['baseline+label_bias']['accuracy']['estimate'])} "
            f"| {pct(methods['tuned+label_bias']['accuracy']['estimate'])} "
            f"| {cost['forward_passes']} | {cost['seconds'] / 60:.1f} |"
        )
    return lines


def level_table(runs: list[dict]) -> list[str]:
    lines = [
        "| model | task | objective | level | gamma | heads | calibration acc | test acc | difference "
        "| McNemar p | greedy acc | invalid | passes | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        r, d = run["results"], describe(run)
        baseline = r["tuning"]["baseline"]["calibration"]
        test_baseline = r["test"]["methods"]["baseline"]
        lines.append(
            f"| {d['model']} | {d['task']} | {d['objective']} | baseline | 1 | - | {pct(baseline['accuracy'])} "
            f"| {interval(test_baseline['accuracy'])} | - | - | {pct(test_baseline['greedy_accuracy']['estimate'])} "
            f"| {pct(test_baseline['invalid_rate'])} | - | - |"
        )
        for name, level in sorted(r["tuning"]["levels"].items()):
            test = r["test_per_level"][name]
            stage = r["cost"]["stages"].get(f"level{name}", {})
            lines.append(
                f"| | | | {name} | {level['gamma']:g} | {heads_text(level, d['heads'])} "
                f"| {pct(level['calibration']['accuracy'])} | {interval(test['accuracy_interval'])} "
                f"| {signed_interval(test['accuracy_difference'])} | {test['mcnemar']['p_value']:.3g} "
                f"| {pct(test['greedy_accuracy'])} | {pct(test['invalid_rate'])} "
                f"| {stage.get('forward_passes', 0)} | {stage.get('seconds', 0.0):.0f} |"
            )
    return lines


def verdict_lines(runs: list[dict]) -> list[str]:
    better = worse = same = 0
    beats_label_bias = 0
    for run in runs:
        comparison = run["results"]["test"]["comparisons"]["tuned vs baseline"]
        if comparison["mcnemar"]["p_value"] < SIGNIFICANCE:
            if comparison["accuracy_difference"]["estimate"] > 0:
                better += 1
            else:
                worse += 1
        else:
            same += 1
        versus_calibration = run["results"]["test"]["comparisons"]["tuned vs baseline+label_bias"]
        if versus_calibration["mcnemar"]["p_value"] < SIGNIFICANCE and versus_calibration["accuracy_difference"]["estimate"] > 0:
            beats_label_bias += 1
    return [
        f"Of {len(runs)} runs, the selected ZeroTuning profile is significantly better than the untouched "
        f"model on the held-out test split in {better}, significantly worse in {worse}, and not "
        f"distinguishable (McNemar p >= {SIGNIFICANCE}) in {same}. It is significantly better than the "
        f"label-bias-calibrated baseline in {beats_label_bias}.",
    ]


def settings_lines(runs: list[dict]) -> list[str]:
    r = runs[0]["results"]
    s = r["settings"]
    tuning = s["tuning"]
    models = sorted({f"`{describe(run)['model']}` ({run['results']['model']['class']}, "
                     f"{run['results']['model']['parameters'] / 1e6:.0f}M parameters)" for run in runs})
    return [
        f"- Models: {', '.join(models)}; float32 on the CPU (2 cores).",
        f"- Levels {', '.join(map(str, tuning['levels']))}: Level 0 = gamma {tuning['fixed_gamma']:g} on every head; "
        f"Level 1 = grid {', '.join(f'{g:g}' for g in tuning['gammas'])} on every head; Level 2 = head profiling "
        f"(probe gamma {tuning['probe_gamma']:g}, granularity `{tuning['granularity']}`) then the grid on the "
        "dominant kind. The level with the best calibration objective is *selected*; test never influences it.",
        f"- Shots {s['shots']}, seeds {s['seeds']}, batch size {s['batch_size']}, "
        f"{s['bootstrap_resamples']} bootstrap resamples; 95% intervals.",
        "- Accuracy is the answer-likelihood prediction (the offered answer whose first token is most likely "
        "at the answer position); `invalid (greedy)` is the share of test examples whose greedy next token "
        "names no offered answer (the paper's scorer counts those as wrong).",
        "- Label-bias baseline: the untouched model's answer distribution divided by its mean over the "
        "calibration inputs (fitted on the calibration split, like gamma).",
        "- `passes`, `minutes`, `seconds`: forward passes (batches) and wall time of tuning plus test "
        "evaluation (model loading excluded), on the project's 2-core CPU machine.",
    ]


def files_lines(runs: list[dict], folder: Path, page: Path) -> list[str]:
    """Links to each run's JSON and plots, relative to the page."""
    lines = []
    for run in runs:
        base = Path(os.path.relpath(folder / run["name"], page.parent))
        links = [f"[{name}]({(base / name).as_posix()})" for name in RUN_FILES if (folder / run["name"] / name).is_file()]
        lines.append(f"- `{run['name']}`: " + ", ".join(links))
    return lines


def render(runs: list[dict], folder: Path, page: Path) -> str:
    source = folder.as_posix()
    lines = [
        "# Results",
        "",
        f"Generated by `scripts/make_results_md.py` from the `results.json` of {len(runs)} runs of "
        f"`zerotuning tune` made by `scripts/run_results_matrix.py`; their files are in `{source}`. Tuning uses only each "
        "task's calibration split; every accuracy below is on its disjoint test split. Do not edit by hand.",
        "",
        "## Verdict",
        "",
        *verdict_lines(runs),
        "",
        "## Selected profile vs baseline (test split)",
        "",
        *summary_table(runs),
        "",
        "## Every level (calibration and test)",
        "",
        *level_table(runs),
        "",
        "## Settings",
        "",
        *settings_lines(runs),
        "",
        "## Runs",
        "",
        "Field meanings: `docs/tuning.md`.",
        "",
        *files_lines(runs, folder, page),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder holding <run>/results.json")
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"), help="page to write")
    args = parser.parse_args(argv)
    runs = load_runs(args.folder)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(runs, args.folder, args.out))
    print(f"wrote {args.out} from {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
