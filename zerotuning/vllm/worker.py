"""Swapping the served profile on a running engine: a vLLM worker extension.

Start the engine with ``worker_extension_cls=zerotuning.vllm.WORKER_EXTENSION``, then
``zerotuning.vllm.swap_profile(llm, profile)`` (which calls ``zerotuning_swap_profile`` in every
worker, tensor-parallel ranks included, and empties the prefix cache) serves the new gammas from
the next step on, without reloading.
"""

from __future__ import annotations

from ..profile import Profile
from . import layer_gammas


def layers_without_gammas(vllm_config) -> list[str]:
    """``name (impl class)`` of each attention layer of this worker whose backend cannot apply gammas.

    No attention layer found at all counts as one that cannot: a swap is let through only where
    every layer is known to apply it.
    """
    from vllm.config import get_layers_from_vllm_config
    from vllm.model_executor.layers.attention import Attention

    layers = get_layers_from_vllm_config(vllm_config, Attention)
    if not layers:
        return ["(no attention layer registered in this worker)"]
    return [
        f"{name} ({type(layer.impl).__name__})"
        for name, layer in layers.items()
        if not getattr(layer.impl, "zerotuning_applies_gammas", False)
    ]


class ZeroTuningWorkerExtension:
    def zerotuning_swap_profile(self, profile_json: dict) -> str:
        served = layer_gammas.served_profile(self.vllm_config)
        if served is None:
            raise ValueError(
                "zerotuning: the engine was started without a profile, so its layers run vLLM's own attention; start it "
                "with a profile (an all-ones one is enough: zerotuning.Profile.neutral) to swap profiles later"
            )
        profile = Profile.from_json(profile_json)
        from vllm.platforms import current_platform

        if not current_platform.is_cpu() and any(gamma != 1.0 for row in profile.gammas for gamma in row):
            unable = layers_without_gammas(self.vllm_config)
            if unable:
                raise NotImplementedError(
                    "zerotuning: the vLLM plugin applies gamma != 1 on vLLM's CPU backend and CUDA's FLASH_ATTN backend "
                    f"only; on {current_platform.device_name} these attention layers run another backend: "
                    f"{', '.join(unable[:3])}{' ...' if len(unable) > 3 else ''}; the swap is refused (docs/vllm.md)"
                )
        served.swap(profile)
        return served.profile.identity.describe()
