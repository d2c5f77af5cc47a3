#!/usr/bin/env bash
# The README's lm-eval example end to end on the default model: tune a profile on the built-in
# sentiment task, export the task for lm-eval, run lm-eval with the tuned and with a neutral
# profile, and compare the two runs sample by sample.
#   scripts/lm_eval_example.sh [OUT_DIR]      (default runs/lm_eval_example; about 6 minutes here)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/lm_eval_example}
if [ -e "$out" ]; then
  echo "$out already exists; remove it or pass another folder" >&2
  exit 1
fi
scripts/setup_lm_eval_env.sh
. .venv-lm-eval/bin/activate
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1

set -x
zerotuning tune --model smollm2 --task sentiment --search levels --out "$out/tuned"
zerotuning lm-eval-task --task sentiment --out "$out/tasks"
zerotuning lm-eval --model smollm2 --profile "$out/tuned/profile.json" --tasks zerotuning_sentiment \
    --include_path "$out/tasks" --batch_size 8 --output_path "$out/lm_eval/tuned" --log_samples
zerotuning lm-eval --model smollm2 --neutral-profile --tasks zerotuning_sentiment \
    --include_path "$out/tasks" --batch_size 8 --output_path "$out/lm_eval/neutral" --log_samples
zerotuning compare "$out/lm_eval/neutral" "$out/lm_eval/tuned" --out "$out/comparison.json"
