"""GPU attention backends that refuse a profile they cannot apply.

The sink bias is implemented for vLLM's CPU backend and, on CUDA, its FLASH_ATTN backend
(``cuda_backend``). On any other GPU backend vLLM would otherwise serve the untouched model while
the user believes a profile is applied; so the plugin registers, over each other backend vLLM
picks for decoder models on GPUs (and over FLASH_ATTN off CUDA), a subclass whose attention layers
refuse to start when the served profile has a gamma != 1 (an all-ones profile is served as is).
The worker extension refuses swaps to such a profile when a layer's backend does not apply gammas.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

GUARDED_BACKENDS = ("FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION")
_PREFIX = "Guarded_"


def guard_path(backend_name: str) -> str:
    return f"{__name__}.{_PREFIX}{backend_name}"


def refuse_active_profile(served: Any, where: str) -> None:
    """Raise NotImplementedError when ``served`` (a ServedProfile or None) changes any layer."""
    if served is not None and any(served.active):
        raise NotImplementedError(
            f"zerotuning profile {served.source}: gamma != 1 on {where}, but the vLLM plugin applies the sink "
            "bias on vLLM's CPU backend and on CUDA's FLASH_ATTN backend only; serve it there (on CUDA: "
            "--attention-backend FLASH_ATTN, a float16 or bfloat16 model), or with transformers and zerotuning.apply "
            "(docs/vllm.md)"
        )


def __getattr__(name: str) -> Any:
    # The guarded classes are built on first use: their bases import GPU-only modules.
    if not name.startswith(_PREFIX) or name[len(_PREFIX):] not in GUARDED_BACKENDS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    backend_name = name[len(_PREFIX):]
    guarded = _guarded_backend(backend_name)
    globals()[name] = guarded
    return guarded


def _guarded_backend(backend_name: str) -> type:
    from vllm.config import get_current_vllm_config
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    from .layer_gammas import served_profile

    module_name, class_name = AttentionBackendEnum[backend_name].value.rsplit(".", 1)
    base = getattr(import_module(module_name), class_name)
    base_impl = base.get_impl_cls()

    class GuardedImpl(base_impl):
        def __init__(self, *args, **kwargs):
            refuse_active_profile(served_profile(get_current_vllm_config()), f"vLLM's {backend_name} backend")
            super().__init__(*args, **kwargs)

    class GuardedBackend(base):
        @staticmethod
        def get_impl_cls():
            return GuardedImpl

    GuardedBackend.__name__ = GuardedBackend.__qualname__ = f"{_PREFIX}{backend_name}"
    GuardedImpl.__name__ = GuardedImpl.__qualname__ = f"{_PREFIX}{backend_name}Impl"
    return GuardedBackend
