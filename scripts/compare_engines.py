"""Compare two `zerotuning tune` runs of the same settings on different engines (docs/vllm.md, Tuning through vLLM).

    python scripts/compare_engines.py docs/results/engine_vllm/smollm2-sentiment-transformers docs/results/engine_vllm/smollm2-sentiment-vllm

Prints, per run: the engine, the selection (level, gamma, head count), the calibration accuracy
the objective judged, the test accuracies, the recorded seconds; then whether the selections and
the test predictions are the same, and the largest difference of any candidate's objective key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(folder: Path) -> tuple[dict, list]:
    results = folder / "results.json"
    if not results.is_file():
        raise SystemExit(f"compare_engines: {str(folder)!r} has no results.json; expected a `zerotuning tune` run folder")
    return json.loads(results.read_text()), json.loads((folder / "predictions.json").read_text())


def row(results: dict) -> dict:
    selected = results["selected"]
    methods = results["test"]["methods"]
    stages = results["cost"]["stages"]
    return {
        "engine": results["engine"]["engine"],
        "selected": f"{selected['level']}, gamma {selected['gamma']:g}, {len(selected['heads']) if isinstance(selected['heads'], list) else selected['heads']} heads",
        "calibration accuracy (judged)": results["selection"]["calibration_accuracy"]["method"],
        "test tuned": methods["tuned"]["accuracy"]["estimate"],
        "test tuned+label_bias": methods["tuned+label_bias"]["accuracy"]["estimate"],
        "test baseline": methods["baseline"]["accuracy"]["estimate"],
        "engine start s": stages.get("engine_start", {}).get("seconds", 0.0),
        "tuning s": results["cost"]["tuning"]["seconds"],
        "total s": results["cost"]["total"]["seconds"],
    }


def candidate_keys(results: dict) -> dict:
    """Every scored candidate's objective key, by (level, candidate name or gamma)."""
    keys = {}
    for level, record in results["tuning"]["levels"].items():
        for candidate in record["candidates"]:
            keys[(level, candidate.get("name") or candidate["gamma"])] = candidate["key"]
        for rung, scored in enumerate((record.get("search") or {}).get("rungs", [])):  # budgeted: every rung's candidates
            for candidate in scored["candidates"]:
                keys[(level, f"rung {rung}: {candidate['name']}")] = candidate["key"]
        for probe in (record.get("head_profile") or {}).get("effects", []):
            keys[(level, f"probe {probe['layer']}/{probe['head']}")] = probe["key_change"]
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args(argv)
    (first, first_predictions), (second, second_predictions) = load(args.first), load(args.second)
    rows = [row(first), row(second)]
    for name in rows[0]:
        values = [f"{value:.3f}" if isinstance(value, float) else str(value) for value in (r[name] for r in rows)]
        print(f"{name:32s} {values[0]:>28s} {values[1]:>28s}")
    print(f"same selection: {first['selected'] == second['selected']}; same test predictions: {first_predictions == second_predictions}")
    keys = [candidate_keys(first), candidate_keys(second)]
    shared = keys[0].keys() & keys[1].keys()
    if shared != keys[0].keys() or shared != keys[1].keys():
        print(f"scored candidates differ: {len(keys[0])} vs {len(keys[1])}, {len(shared)} shared")
    worst = max((abs(a - b) for key in shared for a, b in zip(keys[0][key], keys[1][key])), default=0.0)
    print(f"largest objective-key difference over {len(shared)} shared candidates and probes: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
