#!/usr/bin/env bash
# Every test: sets up .venv, then the Catch2 C++ tests of the kernel core, the CUDA compile check
# (nvcc, when present) and the whole pytest suite (CUDA tests skip without a GPU).
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

if [ -x scripts/check_cuda_compile.sh ]; then
  echo "== CUDA sources compile"
  scripts/check_cuda_compile.sh
fi

echo "== Python tests"
python -m pytest -q "$@"
