"""The Level 3 section of docs/RESULTS.md (used by make_results_md.py).

A Level 3 run is a ``zerotuning tune --search levels`` run whose levels include 3 (made with
``scripts/run_results_matrix.py --out docs/results/level3 -- --search levels --levels 0,1,2,3
--probes gradient``). Every level's profile was judged on the test split in the same run: untouched
and with label bias (``test_per_level.<N>.label_bias``). Every number comes from those files.
"""

from __future__ import annotations

import json
from pathlib import Path

SIGNIFICANCE = 0.05


def is_level3_run(results: dict) -> bool:
    tuning = results["settings"]["tuning"]
    return tuning.get("search", "levels") == "levels" and 3 in tuning.get("levels", ())


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _interval(i: dict) -> str:
    return f"{_pct(i['estimate'])} [{_pct(i['low'])}, {_pct(i['high'])}]"


def _versus(comparison: dict) -> str:
    d = comparison["accuracy_difference"]
    return f"{100 * d['estimate']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}], p={comparison['mcnemar']['p_value']:.2g}"


def _verdict(comparison: dict) -> int:
    """+1 significantly better, -1 significantly worse, 0 not distinguishable."""
    if comparison["mcnemar"]["p_value"] >= SIGNIFICANCE:
        return 0
    return 1 if comparison["accuracy_difference"]["estimate"] > 0 else -1


def _gamma_text(level: dict, results: dict, fitted: list[float]) -> str:
    if level["level"] == 3 and level["heads"] == "all":
        return f"per head {min(fitted):.2f}-{max(fitted):.2f} (geo. mean {level['gamma']:.2f})"
    if level["gamma"] == 1:
        return "1 (untouched)"
    identity = results["model"]["identity"]
    heads = f"all {identity['num_layers'] * identity['num_heads']}" if level["heads"] == "all" else f"{level['head_count']}"
    return f"{level['gamma']:g} on {heads} heads"


def _fitted_gammas(folder: Path, run: dict) -> list[float]:
    """Level 3's gammas on the tunable layers, from the run's saved profile."""
    profile = json.loads((folder / run["name"] / "profile_level3.json").read_text())
    layers = run["results"]["tuning"]["levels"]["3"]["fit"]["layers"]
    return [gamma for layer in layers for gamma in profile["gammas"][layer]]


def level3_section(runs: list[dict], describe, folder: Path) -> list[str]:
    """``runs``: the Level 3 runs (``dict(name, results)``, ``name`` relative to ``folder``) in table order;
    ``describe(run)``: its model, task and objective."""
    if not runs:
        return []
    # per level: [better, worse, not distinguishable] against label bias alone, and against the untouched model
    verdicts = {level: {reference: [0, 0, 0] for reference in ("vs_baseline_label_bias", "vs_baseline")} for level in (2, 3)}
    selected = {}
    for run in runs:
        r = run["results"]
        selected[r["tuning"]["selected_level"]] = selected.get(r["tuning"]["selected_level"], 0) + 1
        for level, counts in verdicts.items():
            calibrated = r["test_per_level"][str(level)]["label_bias"]
            for reference, tally in counts.items():
                tally[(1, -1, 0).index(_verdict(calibrated[reference]))] += 1
    lines = [
        "## Level 3 (fitted per-head gammas) and gradient-profiled Level 2",
        "",
        f"{len(runs)} runs of `zerotuning tune --search levels --levels 0,1,2,3 --probes gradient` (label-bias objective, "
        "the default): Level 2's heads are profiled from one forward + backward pass (docs/gradient.md), Level 3 fits a "
        "gamma per head of every layer (docs/tuning.md, section 3). Each level's profile is judged on the test split with "
        "label bias fitted on its calibration scores, against label bias alone and against the untouched model.",
        "",
    ]
    for level, name in ((3, "Level 3"), (2, "Level 2 (gradient profiling)")):
        better, worse, same = verdicts[level]["vs_baseline_label_bias"]
        up, down, flat = verdicts[level]["vs_baseline"]
        lines.append(
            f"- {name} + label bias vs label bias alone: significantly better in {better} of {len(runs)} runs, significantly "
            f"worse in {worse}, not distinguishable (McNemar p >= {SIGNIFICANCE}) in {same}. Against the untouched model: "
            f"better in {up}, worse in {down}, not distinguishable in {flat}."
        )
    for level, name in ((3, "Level 3"), (2, "Level 2 (gradient profiling)")):
        without = [
            " ".join(describe(run)[field] for field in ("model", "task", "objective"))
            for run in runs
            if _verdict(run["results"]["test_per_level"][str(level)]["label_bias"]["vs_baseline_label_bias"]) <= 0
        ]
        if without:
            lines.append(f"- {name} does not beat label bias alone significantly on: {'; '.join(without)}.")
    lines.append(
        "- Selected by the calibration rule: "
        + ", ".join(f"level {level} in {count}" for level, count in sorted(selected.items(), key=lambda item: str(item[0])))
        + f" of {len(runs)} runs."
    )
    lines += [
        "",
        "| model | task | objective | level | gamma | calibration objective | test: tuned | tuned + label bias "
        "| vs label bias alone | vs untouched | forward / backward passes | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        r, d = run["results"], describe(run)
        fitted = _fitted_gammas(folder, run)
        methods = r["test"]["methods"]
        key_name = r["settings"]["objective"]["key"][0]
        baseline_key = r["tuning"]["baseline"]["key"][0]
        lines.append(
            f"| {d['model']} | {d['task']} | {d['objective']} | untouched | 1 | {baseline_key:.3f} "
            f"| {_interval(methods['baseline']['accuracy'])} | {_interval(methods['baseline+label_bias']['accuracy'])} (label bias alone) "
            f"| - | - | - | - |"
        )
        for name, level in sorted(r["tuning"]["levels"].items()):
            test = r["test_per_level"][name]
            calibrated = test["label_bias"]
            stage = r["cost"]["stages"].get(f"level{name}", {})
            mark = " (selected)" if str(r["tuning"]["selected_level"]) == name else ""
            lines.append(
                f"| | | | {name}{mark} | {_gamma_text(level, r, fitted)} | {level['key'][0]:.3f} "
                f"| {_interval(test['accuracy_interval'])} | {_interval(calibrated['accuracy'])} "
                f"| {_versus(calibrated['vs_baseline_label_bias'])} | {_versus(calibrated['vs_baseline'])} "
                f"| {stage.get('forward_passes', 0)} / {stage.get('backward_passes', 0)} | {stage.get('seconds', 0.0) / 60:.1f} |"
            )
        lines.append(f"| | | | whole run | | `{key_name}` | | | | | {r['cost']['total']['forward_passes']} / "
                     f"{r['cost']['total']['backward_passes']} | {r['cost']['total']['seconds'] / 60:.1f} |")
    lines += [
        "",
        "Level 3's fit (loss: minus the stand-in, see docs/gradient.md; held-out: a seeded quarter of the calibration split; "
        "peak memory: the process's peak resident set after the fit, batch size "
        f"{runs[0]['results']['settings']['batch_size']}):",
        "",
        "| model | task | objective | steps run (most) | kept step | held-out loss: step 0 -> kept | fit loss: step 0 -> last | "
        "stopped early | peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        r, d = run["results"], describe(run)
        fit = r["tuning"]["levels"]["3"]["fit"]
        held = fit["held_out_losses"]
        lines.append(
            f"| {d['model']} | {d['task']} | {d['objective']} | {fit['steps_run']} ({fit['steps']}) | {fit['best_step']} "
            f"| {held[0]:.4f} -> {held[fit['best_step']]:.4f} | {fit['fit_losses'][0]:.4f} -> {fit['fit_losses'][-1]:.4f} "
            f"| {'yes' if fit['stopped_early'] else 'no'} | {fit['peak_rss_mib']:.0f} |"
        )
    tuning = runs[0]["results"]["settings"]["tuning"]
    prior = tuning["fit_prior"]
    lines += [
        "",
        f"- Settings: Level 0 gamma {tuning['fixed_gamma']:g}; grid {', '.join(f'{g:g}' for g in tuning['gammas'])}; Level 2 "
        f"probes `{tuning['probes']}` (probe gamma {tuning['probe_gamma']:g}, granularity `{tuning['granularity']}`); Level 3 "
        f"Adam, at most {tuning['fit_steps']} steps, learning rate {tuning['fit_learning_rate']:g}, prior "
        f"{prior if isinstance(prior, str) else format(prior, 'g')}, every layer tunable. `calibration objective`: the first "
        "component of the selection key on the whole calibration split (for Level 3 in-sample on its fit fold). Passes "
        "are batches; a backward pass costs about two forward passes; minutes on the project's 2-core CPU machine.",
        "",
    ]
    return lines
