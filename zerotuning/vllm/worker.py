"""Swapping the served profile on a running engine: a vLLM worker extension.

Start the engine with ``worker_extension_cls=zerotuning.vllm.WORKER_EXTENSION``, then
``llm.collective_rpc("zerotuning_swap_profile", args=(profile.to_json(),))`` serves the new gammas
from the next step on, in every worker (tensor-parallel ranks included), without reloading.
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
        served.swap(Profile.from_json(profile_json))
        return served.profile.identity.describe()
