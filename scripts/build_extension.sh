#!/usr/bin/env bash
# Builds zerotuning's C++ extension into the virtual environment VENV (default .venv) when its
# sources or build files changed since that environment's last build (or it does not import).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
build_hash=$(cat setup.py pyproject.toml tools/cpu_isa.py $(find csrc -type f | sort) | sha256sum | cut -c1-16)
if [ "$(cat "$venv/.zerotuning-build" 2>/dev/null)" != "$build_hash" ] || ! "$venv/bin/python" -c "import zerotuning._C" 2>/dev/null; then
  echo "building zerotuning into $venv (C++ extension, about a minute)"
  "$venv/bin/python" -m pip install -q --no-build-isolation --no-deps -e .
  echo "$build_hash" >"$venv/.zerotuning-build"
fi
