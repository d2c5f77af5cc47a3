#!/usr/bin/env bash
# The vLLM plugin tests (tests_vllm/), in their own environment .venv-vllm (vLLM's CPU build).
# Called by scripts/test.sh; extra arguments go to pytest. The default model is exported once to a
# temporary folder (or set ZEROTUNING_VLLM_MODEL to an existing `zerotuning export` folder).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_vllm_env.sh
export HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
.venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests_vllm "$@"
