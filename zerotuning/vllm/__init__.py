"""ZeroTuning inside vLLM: a plugin that serves a model with a saved profile applied (docs/vllm.md).

Installed with the extra ``zerotuning[vllm]``, vLLM loads ``register`` (entry point group
``vllm.general_plugins``) in every process before it builds the model. On the CPU it puts
ZeroTuning's subclass in place of the ``CPU_ATTN`` backend; on CUDA, in place of ``FLASH_ATTN``
(``cuda_backend``: FlashAttention's log-sum-exp and an exact post-hoc correction). Both read the
profile (``layer_gammas``) and run vLLM's own attention wherever every gamma of a layer is 1. The
other GPU backends (and FLASH_ATTN off CUDA) are wrapped so that a profile with a gamma != 1 is
refused instead of being silently ignored (``gpu_guard``).
Nothing here imports vLLM until ``register`` or vLLM itself asks for it.
"""

from __future__ import annotations

from typing import Any

CPU_BACKEND = "zerotuning.vllm.cpu_backend.ZeroTuningCPUAttentionBackend"
CUDA_BACKEND = "zerotuning.vllm.cuda_backend.ZeroTuningFlashAttentionBackend"
WORKER_EXTENSION = "zerotuning.vllm.worker.ZeroTuningWorkerExtension"


def register() -> None:
    """The ``vllm.general_plugins`` entry point; safe to call more than once."""
    from vllm.platforms import current_platform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    if current_platform.is_cpu():
        register_backend(AttentionBackendEnum.CPU_ATTN, CPU_BACKEND)
        return
    from .gpu_guard import GUARDED_BACKENDS, guard_path

    on_cuda = current_platform.is_cuda()
    if on_cuda:
        register_backend(AttentionBackendEnum.FLASH_ATTN, CUDA_BACKEND)
    for name in GUARDED_BACKENDS:
        if not (on_cuda and name == "FLASH_ATTN"):
            register_backend(AttentionBackendEnum[name], guard_path(name))


def swap_profile(llm: Any, profile: Any) -> str:
    """Serve ``profile`` on a running ``vllm.LLM`` from its next request on, without reloading.

    The engine must have been started with a profile and ``worker_extension_cls=WORKER_EXTENSION``.
    The prefix cache is emptied too: cached keys and values of every layer after the first were
    computed under the old gammas. Call it between requests. Returns the served model's description.
    """
    from ..profile import Profile

    if not isinstance(profile, Profile):
        raise TypeError(f"swap_profile: profile must be a zerotuning.Profile, got {type(profile).__name__}")
    described = llm.collective_rpc("zerotuning_swap_profile", args=(profile.to_json(),))
    if not llm.reset_prefix_cache():
        raise RuntimeError("swap_profile: vLLM could not empty its prefix cache (requests still running?); swap between requests")
    return described[0]
