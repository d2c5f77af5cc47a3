"""The gammas of a vLLM process: where the profile comes from, what is refused, and swapping it.

One ``ServedProfile`` per process (front end, engine core, each worker) owns a ``[layers, heads]``
float32 tensor of log-gammas and a per-layer "active" flag (some gamma != 1). Attention layers
hold views of its rows, so ``swap`` changes a running engine in place, without reloading.

Where the profile comes from (docs/vllm.md), in this order:
1. ``additional_config={"zerotuning_profile": "<path>"}`` (``--additional-config`` of ``vllm serve``);
2. the file ``zerotuning_profile.json`` in the model folder (``zerotuning export --profile`` puts it there);
3. neither: no profile, and every layer runs vLLM's own attention unchanged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..export import PROFILE_FILE
from ..profile import ModelIdentity, Profile

ADDITIONAL_CONFIG_KEY = "zerotuning_profile"
_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass
class ServedProfile:
    """The profile this process serves, checked against the served model."""

    profile: Profile
    source: str
    sliding_layers: frozenset[int]
    log_gammas: torch.Tensor  # [layers, heads] float32
    active: list[bool]
    # Copies of log_gammas on accelerators (CUDA backend), kept equal to it by swap.
    device_copies: dict[torch.device, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, profile: Profile, source: str, hf_config: Any) -> "ServedProfile":
        text_config = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
        identity = ModelIdentity.of(SimpleNamespace(config=text_config))
        try:
            # Serving refuses what `apply` would only warn about: a profile tuned on another configuration.
            profile.check_matches(identity, strict=profile.identity.config_fingerprint is not None)
        except ValueError as error:
            raise ValueError(f"zerotuning profile {source}: {error}") from None
        served = cls(profile, source, _sliding_layers(text_config), torch.zeros(identity.num_layers, identity.num_heads), [False] * identity.num_layers)
        served.swap(profile)
        return served

    def swap(self, profile: Profile) -> None:
        """Serve ``profile``'s gammas from the next forward on; refuses a profile this model cannot take."""
        if profile.identity != self.profile.identity:
            raise ValueError(f"zerotuning: swap to a profile for {profile.identity.describe()}, but the engine serves {self.profile.identity.describe()}")
        for layer in sorted(self.sliding_layers):
            if any(gamma != 1.0 for gamma in profile.gammas[layer]):
                raise ValueError(
                    f"zerotuning profile {self.source}: layer {layer} is a sliding-window layer, where vLLM's cache may "
                    "have dropped the sink; the vLLM plugin supports gamma != 1 only on full-attention layers (set 1.0 there)"
                )
        logs = torch.tensor([[math.log(gamma) for gamma in row] for row in profile.gammas], dtype=torch.float32)
        self.log_gammas.copy_(logs)
        for copy in self.device_copies.values():
            copy.copy_(logs)
        self.active[:] = [bool((row != 0).any()) for row in logs]
        self.profile = profile

    def layer_view(self, layer: int, num_local_heads: int, rank: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The log-gammas of the heads one tensor-parallel rank holds (contiguous head slices).

        With ``device`` (not the CPU): a view of this process's copy on that device, which ``swap``
        updates in place like the CPU tensor, so a layer can hold it across swaps.
        """
        heads = self.log_gammas.shape[1]
        if num_local_heads * (heads // num_local_heads) != heads:
            raise ValueError(f"zerotuning: the layer has {num_local_heads} query heads on this rank, which does not divide the profile's {heads}")
        table = self.log_gammas
        if device is not None and torch.device(device).type != "cpu":
            device = torch.device(device)
            if device not in self.device_copies:
                self.device_copies[device] = self.log_gammas.to(device)
            table = self.device_copies[device]
        return table[layer, rank * num_local_heads : (rank + 1) * num_local_heads]


_SERVED: dict[str, ServedProfile | None] = {}


def served_profile(vllm_config: Any) -> ServedProfile | None:
    """This process's profile for ``vllm_config`` (read once), or None when there is none."""
    key = str(vllm_config.model_config.model)
    if key not in _SERVED:
        found = find_profile(vllm_config)
        _SERVED[key] = None if found is None else ServedProfile.create(found[0], found[1], vllm_config.model_config.hf_config)
    return _SERVED[key]


def find_profile(vllm_config: Any) -> tuple[Profile, str] | None:
    """(profile, where it came from) as the module docstring orders the sources, or None."""
    additional = vllm_config.additional_config if isinstance(vllm_config.additional_config, dict) else {}
    if ADDITIONAL_CONFIG_KEY in additional:
        path = Path(str(additional[ADDITIONAL_CONFIG_KEY])).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"additional_config {ADDITIONAL_CONFIG_KEY}: {str(path)!r} does not exist; expected a zerotuning profile JSON")
        return Profile.load(path), f"{str(path)!r} (additional_config)"
    folder = Path(str(vllm_config.model_config.model))
    if (folder / PROFILE_FILE).is_file():
        return Profile.load(folder / PROFILE_FILE), f"{str(folder / PROFILE_FILE)!r} (model folder)"
    return None


def layer_index(layer_name: str) -> int:
    """``model.layers.12.self_attn.attn`` -> 12."""
    match = _LAYER_INDEX.search(layer_name)
    if match is None:
        raise ValueError(f"zerotuning: cannot tell the decoder layer of attention layer {layer_name!r} (expected '...layers.<i>....')")
    return int(match.group(1))


def _sliding_layers(text_config: Any) -> frozenset[int]:
    layers = int(text_config.num_hidden_layers)
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types:
        return frozenset(index for index, kind in enumerate(layer_types) if kind != "full_attention")
    window = getattr(text_config, "sliding_window", None)
    if window and getattr(text_config, "use_sliding_window", True):
        return frozenset(range(layers))
    return frozenset()
