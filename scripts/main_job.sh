#!/usr/bin/env bash
# The main job, from a fresh clone: set up .venv, then tune ZeroTuning for SmolLM2-135M-Instruct
# (GGUF from PyPI) on the built-in sentiment task's calibration split and judge it on the held-out
# test split: baseline vs ZeroTuning with 95% intervals, McNemar p, invalid-answer rates and the
# calibration baselines. Writes the profile, results.json and plots to runs/main (or $1).
# Extra arguments go to `zerotuning tune` (see `zerotuning tune --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
. .venv/bin/activate
out="${1:-runs/main}"
[ $# -gt 0 ] && shift
# --overwrite: a rerun replaces its own earlier run (a folder holding anything else is still refused).
time zerotuning tune --model smollm2 --task sentiment --out "$out" --overwrite "$@"
