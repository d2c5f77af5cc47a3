"""Swapping the served profile on a running engine: a vLLM worker extension.

Start the engine with ``worker_extension_cls=zerotuning.vllm.WORKER_EXTENSION``, then
``zerotuning.vllm.swap_profile(llm, profile)`` (which calls ``zerotuning_swap_profile`` in every
worker, tensor-parallel ranks included, and empties the prefix cache) serves the new gammas from
the next step on, without reloading.
"""

from __future__ import annotations

from ..profile import Profile
from . import layer_gammas


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
            raise NotImplementedError(
                "zerotuning: the vLLM plugin applies gamma != 1 on vLLM's CPU backend only; this engine runs on "
                f"{current_platform.device_name}, so the swap is refused (docs/vllm.md)"
            )
        served.swap(profile)
        return served.profile.identity.describe()
