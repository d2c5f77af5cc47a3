#!/usr/bin/env bash
# Every test: sets up .venv, then the Catch2 C++ tests of the kernel core, the CUDA compile check
# (nvcc, when present), the whole pytest suite (CUDA tests skip without a GPU), then the lm-eval
# integration tests in .venv-lm-eval (scripts/test_lm_eval.sh) and the vLLM plugin tests in .venv-vllm
# (scripts/test_vllm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh --test
. .venv/bin/activate

echo "== C++ kernel tests (Catch2)"
mkdir -p build
cmake -S . -B build/cpp -DPython3_EXECUTABLE="$(which python)" >build/cmake-configure.log 2>&1 || {
  cat build/cmake-configure.log; exit 1; }
cmake --build build/cpp -j2
ctest --test-dir build/cpp --output-on-failure

echo "== CUDA sources compile (nvcc, no GPU needed)"
if command -v nvcc >/dev/null 2>&1; then
  scripts/check_cuda_compile.sh
else
  echo "SKIPPED: nvcc is not installed here, so the CUDA sources were not compiled"
fi

echo "== Python tests"
python -m pytest -q "$@"

echo "== lm-eval integration tests (their own environment, .venv-lm-eval)"
scripts/test_lm_eval.sh

echo "== vLLM plugin tests (their own environment, .venv-vllm)"
scripts/test_vllm.sh
