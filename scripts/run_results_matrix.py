"""Runs `zerotuning tune` over models x built-in tasks x objectives, for docs/RESULTS.md.

Each run tunes on the task's calibration split (the default search, or what the options after
`--` ask for, e.g. `-- --search levels`) and judges the result on its test split; its files land
in OUT/<model>-<task>-<objective>/. Finished runs (results.json present) are skipped, so the
matrix can be resumed. `zerotuning tune` runs as `python -m zerotuning.cli` with this script's
interpreter. Then: python scripts/make_results_md.py docs/results

    python scripts/run_results_matrix.py --out docs/results/budgeted
    python scripts/run_results_matrix.py --out docs/results/levels -- --search levels
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("smollm2", "gemma3")
TASKS = ("sentiment", "capitals", "elements")
OBJECTIVES = ("supervised", "unsupervised")


def run_name(model: str, task: str, objective: str) -> str:
    return f"{model}-{task}-{objective}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/results"), help="folder of the runs (default runs/results)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model specs")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated built-in tasks")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated objectives")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `zerotuning tune` options for every run")
    args = parser.parse_args(argv)
    extra = [a for a in args.extra if a != "--"]

    runs = list(itertools.product(args.models.split(","), args.tasks.split(","), args.objectives.split(",")))
    for index, (model, task, objective) in enumerate(runs, 1):
        folder = args.out / run_name(model, task, objective)
        if (folder / "results.json").is_file():
            print(f"[{index}/{len(runs)}] {folder.name}: done already", flush=True)
            continue
        command = [sys.executable, "-m", "zerotuning.cli", "tune", "--model", model, "--task", task, "--objective", objective,
                   "--out", str(folder), *extra]
        print(f"[{index}/{len(runs)}] {' '.join(command)}", flush=True)
        start = time.perf_counter()
        completed = subprocess.run(command)
        if completed.returncode != 0:
            print(f"{folder.name} failed with exit code {completed.returncode}", file=sys.stderr)
            return completed.returncode
        print(f"[{index}/{len(runs)}] {folder.name}: {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
