#!/usr/bin/env bash
# The whole GPU check in one call on a machine with a CUDA GPU, torch (with CUDA), transformers,
# pytest and nvcc already installed, and nothing installable:
#
#   1. build zerotuning._C in place with its CUDA kernels, for this GPU's architecture only;
#   2. run the CUDA tests (pytest -m cuda: the shared op suite tests/test_sink_attention.py on each
#      CUDA path vs the float64 reference, and tests/test_cuda_op.py: the path rule, device-side
#      checks, CUDA graphs, tiny HF models and generation on the GPU);
#   3. run the attention benchmark (scripts/bench_attention.py --preset gpu), then, time
#      permitting, the bf16 cases again with each CUDA path forced, to decide the path rule by
#      measurement;
#   4. print a summary: test counts and each case's ratio to the fastest SDPA backend.
#
#   OUT=/tmp/gpu_check scripts/gpu_check.sh      # on the device tool, $OUT is set already
#
# Logs and results land in $OUT: gpu_check.log (everything printed), build.log, tests_junit.xml,
# bench_gpu.json and bench_gpu_<path>.json for each forced path. Exits non-zero if the
# build or any test fails (the benchmark still runs after failing tests, for its numbers).
# Budget: about 8 minutes on an H100, so one call fits a 10-minute limit.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/zerotuning_gpu_check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
stage() { echo; echo "== [$(elapsed) s] $*"; }
status=0

stage "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true
nvcc --version | tail -2 || true
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: torch sees no CUDA device; nothing to check here"
  exit 1
fi
arch=$("$PYTHON" -c "import torch; major, minor = torch.cuda.get_device_capability(); print(f'{major}{minor}')")
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__, '|', torch.cuda.get_device_name(), 'sm_$arch')"

stage "build (sm_$arch only; full log in build.log)"
rm -f zerotuning/_C*.so
if ZEROTUNING_WITH_CUDA=1 ZEROTUNING_CUDA_ARCHS="$arch" "$PYTHON" setup.py build_ext --inplace >"$OUT/build.log" 2>&1; then
  echo "built in $(elapsed) s"
else
  tail -60 "$OUT/build.log"
  echo "gpu_check: BUILD FAILED"
  exit 1
fi
if ! "$PYTHON" -c "import torch, zerotuning; torch.ops.zerotuning.sink_attention_cuda_path"; then
  echo "gpu_check: the build has no CUDA kernels (torch.ops.zerotuning.sink_attention_cuda_path is missing)"
  exit 1
fi

stage "CUDA tests"
timeout 240 "$PYTHON" -m pytest -q -rs -m cuda -p no:cacheprovider --durations=10 \
  tests/test_sink_attention.py tests/test_cuda_op.py \
  --junitxml="$OUT/tests_junit.xml" || status=1

stage "benchmark: scripts/bench_attention.py --device cuda --preset gpu"
timeout 200 "$PYTHON" scripts/bench_attention.py --device cuda --preset gpu --json "$OUT/bench_gpu.json" || status=1

# Each path forced on the bf16 cases: the numbers that decide the auto rule (cuda_path.h).
for path in split_kv flash_merge cudnn_merge; do
  if [ "$(elapsed)" -gt 500 ]; then
    echo "gpu_check: NOT RUN (time budget): bf16 benchmark with ZEROTUNING_CUDA_PATH=$path"
    continue
  fi
  stage "benchmark with ZEROTUNING_CUDA_PATH=$path (bfloat16, no FlexAttention)"
  ZEROTUNING_CUDA_PATH=$path timeout 75 "$PYTHON" scripts/bench_attention.py --device cuda --preset gpu \
    --dtypes bfloat16 --no-flex --repeats 10 --json "$OUT/bench_gpu_$path.json" || status=1
done

stage "summary"
"$PYTHON" scripts/gpu_check_summary.py "$OUT" || status=1
echo "gpu_check: $( [ $status -eq 0 ] && echo PASSED || echo FAILED ) in $(elapsed) s"
exit $status
