"""ZeroTuning inside vLLM: a plugin that serves a model with a saved profile applied (docs/vllm.md).

Installed with the extra ``zerotuning[vllm]``, vLLM loads ``register`` (entry point group
``vllm.general_plugins``) in every process before it builds the model. It puts ZeroTuning's
subclasses in place of the ``CPU_ATTN`` and ``FLASH_ATTN`` attention backends; they read the
profile (``layer_gammas``) and run vLLM's own attention wherever every gamma of a layer is 1.
Nothing here imports vLLM until vLLM itself asks for a backend.
"""

from __future__ import annotations

CPU_BACKEND = "zerotuning.vllm.cpu_backend.ZeroTuningCPUAttentionBackend"
CUDA_BACKEND = "zerotuning.vllm.cuda_backend.ZeroTuningFlashAttentionBackend"
WORKER_EXTENSION = "zerotuning.vllm.worker.ZeroTuningWorkerExtension"


def register() -> None:
    """The ``vllm.general_plugins`` entry point; safe to call more than once."""
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    register_backend(AttentionBackendEnum.CPU_ATTN, CPU_BACKEND)
    register_backend(AttentionBackendEnum.FLASH_ATTN, CUDA_BACKEND)
