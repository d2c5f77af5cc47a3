#!/usr/bin/env bash
# The lm-eval integration tests (tests_lm_eval/), in their own environment .venv-lm-eval.
# Called by scripts/test.sh; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_lm_eval_env.sh
# No hub: the tests' tasks are local JSONL files, read by datasets' json builder.
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
.venv-lm-eval/bin/python -m pytest -q tests_lm_eval "$@"
