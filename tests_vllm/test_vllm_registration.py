"""What the plugin registers: the CPU backend here, refusing guards over the GPU backends."""

from types import SimpleNamespace

import pytest
from vllm.v1.attention.backends.registry import AttentionBackendEnum

import zerotuning.vllm as plugin
from zerotuning.vllm import gpu_guard


def test_vllm_finds_the_plugin_through_its_entry_point():
    from importlib.metadata import entry_points

    assert any(e.value == "zerotuning.vllm:register" for e in entry_points(group="vllm.general_plugins"))


def test_on_the_cpu_only_the_cpu_backend_is_replaced():
    plugin.register()
    assert AttentionBackendEnum.CPU_ATTN.get_path() == plugin.CPU_BACKEND
    backend = AttentionBackendEnum.CPU_ATTN.get_class()
    assert backend.get_name() == "CPU_ATTN"
    assert not AttentionBackendEnum.FLASH_ATTN.is_overridden()


def test_a_guarded_gpu_backend_keeps_its_name_and_refuses_gammas():
    guarded = getattr(gpu_guard, "Guarded_FLASH_ATTN")  # FlashAttention's module imports on the CPU build too
    assert guarded.get_name() == "FLASH_ATTN"
    assert guarded.get_impl_cls().__name__ == "Guarded_FLASH_ATTNImpl"
    gpu_guard.refuse_active_profile(None, "x")
    gpu_guard.refuse_active_profile(SimpleNamespace(active=[False, False], source="p.json"), "x")
    with pytest.raises(NotImplementedError, match=r"zerotuning profile p\.json: gamma != 1 on vLLM's FLASH_ATTN backend"):
        gpu_guard.refuse_active_profile(SimpleNamespace(active=[False, True], source="p.json"), "vLLM's FLASH_ATTN backend")
    with pytest.raises(AttributeError):
        getattr(gpu_guard, "Guarded_NOT_A_BACKEND")
