"""Gradient head sensitivity against the recorded probe-based head profiles: rank agreement and cost.

For each recorded Levels 0-2 run ``docs/results/<model>-<task>-<objective>/results.json`` of the
given model, rebuild its calibration split (same task, shots, seed, batch size, objective), time one
scoring pass over it (the forward-equivalent unit), compute every head's log-gamma gradient in one
forward + backward pass, turn it into head probes of the recorded granularity and probe gamma, and
compare with the recorded probes: Spearman correlation of the per-probe changes (against each
recorded key component), agreement of the up / down verdicts, the dominant kind, and the overlap
(Jaccard) of the heads Level 2 would rescale. The same comparison is made against probes scored in
this run with this code (``probes_now``), since the recorded runs may predate scoring changes. The cost of ``layer_head`` probing is the measured
forward pass times its probe count (layers x heads passes); it is not run here.

    python scripts/compare_gradient_probes.py smollm2 --out docs/results/gradient
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from zerotuning.atomic_files import write_text_atomically
from zerotuning.hf import remove
from zerotuning.models import load_model
from zerotuning.tasks import TaskRequest, load_task
from zerotuning.tuning.experiment import RunSettings, Session
from zerotuning.tuning.gradient_probes import gradient_head_probes
from zerotuning.tuning.gradient_sensitivity import surrogate_name
from zerotuning.tuning.head_probing import probe_heads
from zerotuning.tuning.tuner import TuningConfig

TASKS = ("capitals", "elements", "sentiment")
OBJECTIVES = ("supervised", "unsupervised")


def recorded_settings(results: dict) -> RunSettings:
    settings = results["settings"]
    objective = settings["objective"]
    tuning = settings["tuning"]
    return RunSettings(
        shots=settings["shots"],
        seed=settings["seeds"]["splits"],
        batch_size=settings["batch_size"],
        objective=objective["name"],
        entropy_over=objective.get("entropy_over", "answers"),
        calibration=objective.get("calibration", "none"),
        answer_forms=settings.get("answer_forms", "surface"),
        tuning=TuningConfig(search="levels", probe_gamma=tuning["probe_gamma"], granularity=tuning["granularity"]),
    )


def jaccard(a: set, b: set) -> float | None:
    return len(a & b) / len(a | b) if a | b else None


def compare(model, tokenizer, run_folder: Path) -> dict:
    results = json.loads((run_folder / "results.json").read_text())
    settings = recorded_settings(results)
    recorded = results["tuning"]["levels"]["2"]["head_profile"]
    task = load_task(TaskRequest(source=results["task"]["name"]))
    session = Session(model, tokenizer, task, settings)
    try:
        start = time.perf_counter()
        baseline = session.baseline("calibration")
        forward_seconds = time.perf_counter() - start
        with session.ledger.stage("gradients"):
            start = time.perf_counter()
            gradients = session.head_gradients("calibration")(session.space.neutral())
            gradient_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scored_now = probe_heads(session.space, session.score["calibration"], session.objective, baseline, probe_gamma=recorded["probe_gamma"], granularity=recorded["granularity"])
        probing_seconds = time.perf_counter() - start
    finally:
        remove(model)
    probes = gradient_head_probes(session.space, gradients, probe_gamma=recorded["probe_gamma"], granularity=recorded["granularity"])
    now = agreement(probes, scored_now.to_json(), settings, session.space.layers)
    recorded_comparison = agreement(probes, recorded, settings, session.space.layers)
    calibration_size = len(session.prepared.sets["calibration"].example_ids)
    stage = session.ledger.to_json()["stages"]["gradients"]
    layer_head_probes = len(session.space.layers) * session.space.num_heads
    recorded_baseline = results["tuning"]["baseline"]["calibration"]
    return {
        "run": str(run_folder),
        "model": results["model"]["load"]["spec"],
        "task": results["task"]["name"],
        "objective": settings.make_objective().to_json(),
        "surrogate": surrogate_name(session.objective),
        "calibration_examples": calibration_size,
        "same_split_size_as_recorded": calibration_size == results["splits"]["calibration"],
        "granularity": recorded["granularity"],
        "probe_gamma": recorded["probe_gamma"],
        "gradients": gradients.tolist(),
        "baseline_mean_answer_log_likelihood": {"now": baseline.mean_answer_log_likelihood(), "recorded": recorded_baseline["mean_answer_log_likelihood"]},
        "probes_now": now,
        "probes_recorded": recorded_comparison,
        "cost": {
            "gradient_pass": {"forward_passes": stage["forward_passes"], "backward_passes": stage["backward_passes"], "seconds": gradient_seconds},
            "one_forward_pass_seconds": forward_seconds,
            "forward_equivalents": gradient_seconds / forward_seconds,
            "head_probing_passes": session.space.num_heads,
            "head_probing_seconds": probing_seconds,
            "head_probing_speedup": probing_seconds / gradient_seconds,
            "layer_head_probing_passes": layer_head_probes,
            "layer_head_probing_seconds_estimated": layer_head_probes * forward_seconds,
            "layer_head_speedup_estimated": layer_head_probes * forward_seconds / gradient_seconds,
        },
    }


def agreement(probes, scored: dict, settings: RunSettings, layers) -> dict:
    """How gradient ``probes`` agree with scored probes (a ``HeadProbes.to_json()``)."""
    order = [(effect["layer"], effect["head"]) for effect in scored["effects"]]
    predicted = {(effect.layer, effect.head): effect for effect in probes.effects}
    predicted_change = np.array([predicted[key].key_change[0] for key in order])
    scored_changes = np.array([effect["key_change"] for effect in scored["effects"]])
    spearman = {}
    for index, name in enumerate(settings.make_objective().to_json()["key"]):
        column = scored_changes[:, index]
        spearman[name] = None if np.ptp(column) == 0 else float(spearmanr(predicted_change, column).statistic)
    verdicts = [predicted[key].kind == effect["kind"] for key, effect in zip(order, scored["effects"])]
    kinds = {"gradient": probes.dominant_kind(), "probes": scored["dominant_kind"]}
    selected = {
        "gradient": {tuple(head) for head in probes.heads_of(kinds["gradient"])},
        "probes": {tuple(head) for effect in scored["effects"] if effect["kind"] == kinds["probes"] for head in _heads(effect, layers)},
    }
    return {
        "predicted_changes": predicted_change.tolist(),
        "scored_changes": scored_changes.tolist(),
        "spearman": spearman,
        "verdict_agreement": float(np.mean(verdicts)),
        "dominant_kind": kinds,
        "selected_heads": {name: len(heads) for name, heads in selected.items()},
        "selected_heads_jaccard": jaccard(selected["gradient"], selected["probes"]),
    }


def _heads(effect: dict, layers) -> list[tuple[int, int]]:
    return [(effect["layer"], effect["head"])] if effect["layer"] is not None else [(layer, effect["head"]) for layer in layers]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model spec (smollm2, gemma3, ...): the prefix of the recorded run folders")
    parser.add_argument("--results", type=Path, default=Path("docs/results"), help="folder of the recorded runs")
    parser.add_argument("--out", type=Path, required=True, help="folder for <model>-<task>-<objective>.json")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated built-in tasks (default: all three)")
    args = parser.parse_args(argv)
    runs = [args.results / f"{args.model}-{task}-{objective}" for task in args.tasks.split(",") for objective in OBJECTIVES]
    missing = [str(run) for run in runs if not (run / "results.json").is_file()]
    if missing:
        raise SystemExit(f"recorded runs missing: {missing}")
    model, tokenizer = load_model(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        row = compare(model, tokenizer, run)
        write_text_atomically(args.out / f"{run.name}.json", json.dumps(row, indent=1) + "\n")
        cost = row["cost"]
        now = row["probes_now"]
        print(f"\n{run.name}: spearman {now['spearman']} verdicts {now['verdict_agreement']:.2f} "
              f"dominant {now['dominant_kind']} jaccard {now['selected_heads_jaccard']} "
              f"fwd-equiv {cost['forward_equivalents']:.2f} head x{cost['head_probing_speedup']:.1f} layer_head x{cost['layer_head_speedup_estimated']:.0f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
