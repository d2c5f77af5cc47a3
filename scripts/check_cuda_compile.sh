#!/usr/bin/env bash
# CI's proof that the CUDA sources compile on a machine without a GPU or a CUDA build of torch:
# every csrc/cuda/*.cu is compiled by nvcc for each target architecture and every
# csrc/cuda/*.cpp by nvcc's host compiler, against the installed torch's headers (the CPU wheel
# ships the ATen/c10 CUDA headers). Nothing is linked or run. Exits non-zero on any error.
#
#   scripts/check_cuda_compile.sh                            # sm_80 and sm_90, as setup.py builds
#   ZEROTUNING_CUDA_ARCHS="90" JOBS=4 scripts/check_cuda_compile.sh
#
# The CPU wheel lacks one generated header, c10/cuda/impl/cuda_cmake_macros.h; a stand-in that
# defines what the CUDA wheel's does (C10_CUDA_BUILD_SHARED_LIBS) is put on the include path.
set -euo pipefail
cd "$(dirname "$0")/.."

ARCHS=${ZEROTUNING_CUDA_ARCHS:-"80 90"}  # the variable and default setup.py uses
ARCHS=${ARCHS//,/ }
JOBS=${JOBS:-2}
NVCC=${NVCC:-nvcc}
if [ -x .venv/bin/python ]; then PYTHON=${PYTHON:-.venv/bin/python}; else PYTHON=${PYTHON:-python3}; fi

if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "check_cuda_compile: nvcc not found (set NVCC=/path/to/nvcc): CUDA sources NOT checked" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Include paths and the flags torch's CUDAExtension passes to nvcc.
mapfile -t torch_flags < <("$PYTHON" - <<'PY'
import torch
from torch.utils import cpp_extension
for path in cpp_extension.include_paths():
    print(f"-I{path}")
for flag in cpp_extension.COMMON_NVCC_FLAGS:
    print(flag)
print(f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}")
PY
)
torch_include=$("$PYTHON" -c "from torch.utils import cpp_extension; print(cpp_extension.include_paths()[0])")
if [ ! -f "$torch_include/c10/cuda/impl/cuda_cmake_macros.h" ]; then
  mkdir -p "$work/shim/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$work/shim/c10/cuda/impl/cuda_cmake_macros.h"
  torch_flags=("-I$work/shim" "${torch_flags[@]}")
fi
common=(-std=c++17 -O3 -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C -Xcompiler -fPIC
        "${torch_flags[@]}")

# One job per (file, architecture) for .cu files, one per file for host .cpp files.
jobs_file="$work/jobs"
: >"$jobs_file"
for source in csrc/cuda/*.cu; do
  for arch in $ARCHS; do
    echo "$source -gencode=arch=compute_${arch},code=sm_${arch}" >>"$jobs_file"
  done
done
for source in csrc/cuda/*.cpp; do echo "$source" >>"$jobs_file"; done

compile_one() {
  local source=$1; shift
  local name
  name=$(echo "$source $*" | tr '/ =,' '____')
  if "$NVCC" -c "$source" -o "$work/$name.o" "${common[@]}" "$@" >"$work/$name.log" 2>&1; then
    echo "ok    $source $*"
  else
    echo "FAIL  $source $*"
    cat "$work/$name.log"
    return 1
  fi
}
export -f compile_one
export NVCC work
export common_serialized
common_serialized=$(printf '%q ' "${common[@]}")

start=$(date +%s)
status=0
xargs -P "$JOBS" -L 1 bash -c 'eval "common=($common_serialized)"; compile_one "$@"' _ <"$jobs_file" || status=1
echo "check_cuda_compile: $(wc -l <"$jobs_file") compiles, $(( $(date +%s) - start )) s, archs: $ARCHS"
if [ "$status" -ne 0 ]; then
  echo "check_cuda_compile: FAILED" >&2
  exit 1
fi
echo "check_cuda_compile: all CUDA sources compile"
