"""Writes docs/RESULTS.md from the results.json files of `zerotuning tune` runs.

    python scripts/make_results_md.py docs/results --out docs/RESULTS.md

Every results.json under the folder (at any depth) is a run: runs of the budgeted search (the
default) and runs of the full Levels 0-2 (``--search levels``, and runs made before the option
existed) get their own tables, runs with Level 3 their own section (``results_md_level3.py``); generation runs (``generation/``) and collateral-damage
evaluations (``collateral/``) get their own section (``results_md_generation.py``), and so do the
runs with and without the chat template (``chat_template/``, ``results_md_chat_template.py``). The engine
comparisons (``engine_vllm/``: one setting tuned through transformers and through vLLM) are no runs of the
matrix and are left out (docs/vllm.md reports them). Every number in the page comes from those files; the page says how
they were produced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from results_md_chat_template import chat_template_section, is_chat_template_run
from results_md_files import recorded
from results_md_generation import generation_section, is_generation_run
from results_md_level3 import is_level3_run, level3_section
from zerotuning.atomic_files import write_text_atomically

SIGNIFICANCE = 0.05
# Table order: the default model and the classification task first; unknown names after, by name.
MODEL_ORDER = ("smollm2", "gemma3")
TASK_ORDER = ("sentiment", "capitals", "elements")
ENGINE_COMPARISONS = "engine_vllm/"
RUN_FILES = ("results.json", "profile.json", "metric_vs_gamma.png", "head_effects.png", "fitted_gammas.png")


def load_runs(folder: Path) -> list[dict]:
    runs = []
    for path in recorded(folder, "results.json", recursive=True):
        with open(path) as f:
            results = json.load(f)
        name = path.parent.relative_to(folder).as_posix()
        # Generation runs and the chat-template runs have their own sections (results_md_generation.py, results_md_chat_template.py).
        if not is_generation_run(results) and not is_chat_template_run(name) and not name.startswith(ENGINE_COMPARISONS):
            runs.append(dict(name=name, results=results))
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


def search_of(run: dict) -> str:
    """``budgeted`` or ``levels`` (runs made before ``--search`` existed ran the levels)."""
    return run["results"]["settings"]["tuning"].get("search", "levels")


def scoring_of(run: dict) -> str:
    """How answers were scored: the resolved mode where recorded (``auto`` resolves per task), else the setting."""
    scoring = run["results"]["task"].get("answer_scoring") or {}
    return scoring.get("mode") or run["results"]["settings"].get("answer_forms", "first_token")


def calibration_of(run: dict) -> str:
    return run["results"]["settings"]["objective"].get("calibration", "none")


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


def budgeted_table(runs: list[dict]) -> list[str]:
    lines = [
        "| model | task | objective | untouched | label bias alone | selected | tuned + label bias "
        "| vs untouched: diff, McNemar p | vs label bias alone: diff, McNemar p | calibration gain -> test gain (optimism) "
        "| passes (share of published) | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        r, d = run["results"], describe(run)
        methods, comparisons = r["test"]["methods"], r["test"]["comparisons"]
        level = r["tuning"]["levels"][str(r["tuning"]["selected_level"])]
        versus_untouched = comparisons["tuned+label_bias vs baseline"]
        versus_calibration = comparisons["tuned+label_bias vs baseline+label_bias"]
        selection, cost = r["selection"], r["cost"]["tuning"]
        selected = "gamma 1 (untouched)" if level["gamma"] == 1 else f"gamma {level['gamma']:g} on {heads_text(level, d['heads'])}"
        lines.append(
            f"| {d['model']} | {d['task']} | {d['objective']} | {interval(methods['baseline']['accuracy'])} "
            f"| {interval(methods['baseline+label_bias']['accuracy'])} | {selected} "
            f"| {interval(methods['tuned+label_bias']['accuracy'])} "
            f"| {signed_interval(versus_untouched['accuracy_difference'])}, {versus_untouched['mcnemar']['p_value']:.3g} "
            f"| {signed_interval(versus_calibration['accuracy_difference'])}, {versus_calibration['mcnemar']['p_value']:.3g} "
            f"| {100 * selection['calibration_gain']:+.1f} -> {100 * selection['test_gain']:+.1f} ({100 * selection['optimism']:+.1f}) "
            f"| {cost['example_equivalent_passes']:.2f} of {cost['published_protocol_passes']} ({cost['fraction_of_published']:.3f}) "
            f"| {r['cost']['total']['seconds'] / 60:.1f} |"
        )
    return lines


def budgeted_detail_table(runs: list[dict]) -> list[str]:
    lines = [
        "| model | task | objective | candidates (rung examples) | finalists on the whole split | tuned (no calibration) "
        "| invalid (greedy) | answer mass (calibration) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        r, d = run["results"], describe(run)
        search = r["tuning"]["levels"]["budgeted"]["search"]
        methods = r["test"]["methods"]
        rungs = " -> ".join(f"{rung['candidates']} ({rung['examples']})" for rung in search["plan"]["rungs"])
        finalists = "; ".join(
            f"{row['name']}{' (selected)' if row['name'] == search['selection']['selected'] else ''}: {key_text(row['key'][0], d['objective'])}"
            for row in search["selection"]["finalists"]
        )
        mass_before = r["tuning"]["baseline"]["calibration"]["mean_answer_mass"]
        mass_after = r["tuning"]["levels"]["budgeted"]["calibration"]["mean_answer_mass"]
        lines.append(
            f"| {d['model']} | {d['task']} | {d['objective']} | {rungs} | {finalists} "
            f"| {interval(methods['tuned']['accuracy'])} "
            f"| {pct(methods['baseline']['invalid_rate'])} -> {pct(methods['tuned']['invalid_rate'])} "
            f"| {pct(mass_before)} -> {pct(mass_after)} |"
        )
    return lines


def key_text(value: float, objective: str) -> str:
    """An objective's first component: an accuracy in percent, or minus an entropy in nats."""
    return pct(value) if objective == "supervised" else f"{value:.3f}"


def budgeted_verdict_lines(runs: list[dict], level_runs: list[dict]) -> list[str]:
    better = worse = beats_calibration = 0
    below_calibration, under_estimate = [], []
    for run in runs:
        comparisons = run["results"]["test"]["comparisons"]
        untouched = comparisons["tuned+label_bias vs baseline"]
        if untouched["mcnemar"]["p_value"] < SIGNIFICANCE:
            better += untouched["accuracy_difference"]["estimate"] > 0
            worse += untouched["accuracy_difference"]["estimate"] < 0
        versus = comparisons["tuned+label_bias vs baseline+label_bias"]["accuracy_difference"]
        d = describe(run)
        label = f"{d['model']} {d['task']} {d['objective']}"
        if comparisons["tuned+label_bias vs baseline+label_bias"]["mcnemar"]["p_value"] < SIGNIFICANCE and versus["estimate"] > 0:
            beats_calibration += 1
        if versus["high"] < 0:
            below_calibration.append(f"{label} ({signed_interval(versus)})")
        elif versus["estimate"] < 0:
            under_estimate.append(f"{label} ({signed_interval(versus)})")
    untouched_selected = sum(run["results"]["tuning"]["levels"]["budgeted"]["gamma"] == 1 for run in runs)
    lines = [
        f"Of {len(runs)} runs of the default (budgeted search, calibration-aware objective), the selected method "
        f"(tuned + label bias) is significantly better than the untouched model on the held-out test split in {better} "
        f"and significantly worse in {worse} (McNemar p < {SIGNIFICANCE}); it is significantly better than label-bias "
        f"calibration alone in {beats_calibration}. The one-standard-error rule kept the untouched model (gamma 1, so "
        f"the method is calibration alone) in {untouched_selected} of {len(runs)}.",
        "",
        "At least as good as calibration alone within the interval: "
        + (f"in every row but {', '.join(below_calibration)}, whose interval of the difference lies below 0."
           if below_calibration else "in every row (no interval of the difference lies entirely below 0).")
        + (f" Below it in the point estimate only (the interval covers 0): {', '.join(under_estimate)}." if under_estimate else ""),
    ]
    costs = [run["results"]["cost"]["tuning"]["fraction_of_published"] for run in runs]
    lines += ["", f"Tuning cost: {min(costs):.3f} to {max(costs):.3f} of the published protocol's passes (baseline included)."]
    pairs = _pairs_with_levels(runs, level_runs)
    if pairs:
        inside = [label for label, budgeted, levels in pairs if levels["low"] <= budgeted["estimate"]]
        lines += [
            "",
            f"Against the full Levels 0-2 runs of the same model, task and objective (table below): the default's selected "
            f"method reaches at least the lower end of the full search's tuned-accuracy interval in {len(inside)} of {len(pairs)}"
            + ("." if len(inside) == len(pairs) else f" (not in: {', '.join(label for label, _, _ in pairs if label not in inside)}).")
            + (" The full runs scored answers by their first token only and judged candidates without calibration, "
               "so their baselines differ too." if any(scoring_of(run) != "surface" for run in level_runs) else ""),
        ]
    return lines


def _pairs_with_levels(runs: list[dict], level_runs: list[dict]) -> list[tuple[str, dict, dict]]:
    by_name = {(d["model"], d["task"], d["objective"]): run for run in level_runs for d in [describe(run)]}
    pairs = []
    for run in runs:
        d = describe(run)
        other = by_name.get((d["model"], d["task"], d["objective"]))
        if other is not None:
            pairs.append((f"{d['model']} {d['task']} {d['objective']}", run["results"]["test"]["methods"]["tuned+label_bias"]["accuracy"], other["results"]["test"]["methods"]["tuned"]["accuracy"]))
    return pairs


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


def budgeted_settings_lines(runs: list[dict]) -> list[str]:
    r = runs[0]["results"]
    s = r["settings"]
    search = r["tuning"]["levels"]["budgeted"]["search"]
    objective = s["objective"]
    models = sorted({f"`{describe(run)['model']}` ({run['results']['model']['class']}, "
                     f"{run['results']['model']['parameters'] / 1e6:.0f}M parameters)" for run in runs})
    return [
        f"- Models: {', '.join(models)}; float32 on the CPU (2 cores).",
        f"- Search: budgeted, {s['tuning']['budget']:g} of the published protocol's passes (1 + heads per layer + 7: "
        "17 for SmolLM2, 12 for Gemma 3), baseline included; successive halving (a third goes on, on prefixes three "
        "times as long) over the family "
        + ", ".join(f"`{member['name']}`" for member in search["family"])
        + " (lowest-priority candidates dropped where the budget needs it); the one-standard-error rule on the whole "
        "calibration split picks the simplest finalist (the untouched model first) within one standard error of the best.",
        f"- Objective: label-bias calibration fitted out of fold ({objective.get('folds')} folds by example id) inside "
        "the calibration split; supervised: (out-of-fold calibrated accuracy, calibrated log-likelihood); unsupervised: "
        "minus the out-of-fold calibrated answer entropy. The selected method is tuned + label bias (the bias refitted on "
        "the whole calibration split of the tuned model), compared on test with label bias alone (the same fit on the "
        "untouched model) and with the untouched model.",
        f"- Answers scored by the mass of their surface forms (`{scoring_of(runs[0])}`: with/without the leading space, "
        "lower-case/capitalised; option letters as given). This changes the untouched model's accuracy against the earlier "
        "first-token runs below.",
        f"- Shots {s['shots']}, seeds {s['seeds']}, batch size {s['batch_size']}, {s['bootstrap_resamples']} bootstrap "
        "resamples; 95% intervals; differences are paired.",
        "- Optimism: calibration gain (out-of-fold calibrated accuracy of the selected profile minus the untouched "
        "model's, in points) minus the test gain (tuned + label bias minus label bias alone).",
        "- `passes`: the tuning's examples scored on the calibration split (baseline included) over its size; `minutes`: "
        "wall time of tuning plus test evaluation (model loading excluded), on the project's 2-core CPU machine.",
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
        ("- Accuracy is the answer-likelihood prediction (the offered answer whose first token is most likely "
         "at the answer position)" if scoring_of(runs[0]) == "first_token" else
         "- Accuracy is the answer-likelihood prediction (the offered answer with the largest surface-form mass "
         "at the answer position)")
        + "; `invalid (greedy)` is the share of test examples whose greedy next token "
        "names no offered answer (the paper's scorer counts those as wrong).",
        f"- Objective calibration: `{calibration_of(runs[0])}`"
        + (" (candidates judged without label-bias calibration)." if calibration_of(runs[0]) == "none" else " (out of fold)."),
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
    budgeted = [run for run in runs if search_of(run) == "budgeted"]
    level3 = [run for run in runs if is_level3_run(run["results"])]  # their own section (results_md_level3.py)
    levels = [run for run in runs if search_of(run) == "levels" and run not in level3]
    lines = [
        "# Results",
        "",
        f"Generated by `scripts/make_results_md.py` from the `results.json` of {len(runs)} runs of "
        f"`zerotuning tune` made by `scripts/run_results_matrix.py`; their files are in `{source}`. Tuning uses only each "
        "task's calibration split; every accuracy below is on its disjoint test split. Do not edit by hand.",
        "",
    ]
    if budgeted:
        lines += [
            "## Verdict: the default (budgeted, calibration-aware search)",
            "",
            *budgeted_verdict_lines(budgeted, levels),
            "",
            "## The default: tuned + label bias vs label bias alone and vs the untouched model (test split)",
            "",
            *budgeted_table(budgeted),
            "",
            "## The default's search",
            "",
            "Rungs as candidates (prefix examples); the finalists' objective on the whole calibration split (supervised: "
            "out-of-fold calibrated accuracy, %; unsupervised: minus the calibrated answer entropy); the tuned model "
            "without calibration; greedy invalid answers and the answers' probability mass, untouched -> tuned.",
            "",
            *budgeted_detail_table(budgeted),
            "",
            "## Settings of the default",
            "",
            *budgeted_settings_lines(budgeted),
            "",
        ]
    if levels:
        lines += [
            "## Verdict: full Levels 0-2" + (" (earlier runs)" if budgeted else ""),
            "",
            *verdict_lines(levels),
            "",
            "## Full Levels 0-2: selected profile vs baseline (test split)",
            "",
            *summary_table(levels),
            "",
            "## Full Levels 0-2: every level (calibration and test)",
            "",
            *level_table(levels),
            "",
            "## Settings of the full Levels 0-2 runs",
            "",
            *settings_lines(levels),
            "",
        ]
    lines += level3_section(level3, describe, folder)
    lines += generation_section(folder, page, runs)
    lines += chat_template_section(folder, page)
    lines += [
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
    write_text_atomically(args.out, render(runs, args.folder, args.out))
    print(f"wrote {args.out} from {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
