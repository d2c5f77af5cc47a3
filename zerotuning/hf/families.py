"""Which HuggingFace models ZeroTuning supports, and where their attention layers are.

Support does not come from a list of patched classes: any decoder whose attention goes through
transformers' ``AttentionInterface`` (and whose masks come from ``masking_utils``) works. The
families below are the ones tested with tiny random-weight models (see docs/hf_integration.md).
"""

from __future__ import annotations

from typing import Any

import torch

from ..profile import ModelIdentity

# model_type -> what differs from Llama, for the docs and for error messages.
TESTED_FAMILIES = {
    "llama": "reference decoder (GQA, RoPE)",
    "qwen2": "optional sliding-window layers (layer_types)",
    "qwen3": "q/k norms, optional sliding-window layers",
    "mistral": "sliding window on every layer",
    "gemma2": "attention logit softcapping, alternating sliding/full layers, query_pre_attn_scalar scaling",
    "gemma3_text": "alternating sliding/full layers (5:1), q/k norms",
    "phi3": "fused qkv projection, optional sliding window",
    "olmo2": "not in the issue's list: stands for any other decoder using the attention interface",
}


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention module of each decoder layer, ordered by layer index.

    Raises TypeError naming the model class when the model does not route attention through
    transformers' AttentionInterface, or its attention layers cannot be matched to its config.
    """
    name = type(model).__name__
    if not getattr(model, "_supports_attention_backend", False) or not hasattr(model, "set_attn_implementation"):
        raise TypeError(
            f"{name} does not route its attention through transformers' AttentionInterface, so ZeroTuning "
            "cannot be applied to it (supported: decoders whose attention layers call "
            "ALL_ATTENTION_FUNCTIONS, e.g. " + ", ".join(sorted(TESTED_FAMILIES)) + ")"
        )
    sub_configs = getattr(model.config, "sub_configs", None) or {}
    if sub_configs:
        raise TypeError(
            f"{name} is a composite model (sub-configs: {sorted(sub_configs)}); apply ZeroTuning to its "
            "language model (e.g. model.model.language_model) so that other towers keep their attention"
        )
    identity = ModelIdentity.of(model)
    by_layer: dict[int, torch.nn.Module] = {}
    for module in model.modules():
        layer = getattr(module, "layer_idx", None)
        if not type(module).__name__.endswith("Attention") or not isinstance(layer, int):
            continue
        if layer in by_layer:
            raise TypeError(
                f"{name}: two attention modules claim layer {layer} ({type(by_layer[layer]).__name__}, "
                f"{type(module).__name__}); ZeroTuning supports one self-attention per decoder layer"
            )
        by_layer[layer] = module
    if sorted(by_layer) != list(range(identity.num_layers)):
        raise TypeError(
            f"{name}: expected one attention module per layer 0..{identity.num_layers - 1}, found layers "
            f"{sorted(by_layer)}; its attention layers are not recognisable as transformers attention modules"
        )
    return [by_layer[layer] for layer in range(identity.num_layers)]


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's weights live (so its gamma buffer is created next to them)."""
    for tensor in module.parameters():
        if tensor.device.type == "meta":
            raise TypeError(
                f"{type(module).__name__} (layer {getattr(module, 'layer_idx', '?')}) has its weights on the meta "
                "device (offloaded by accelerate?); ZeroTuning needs every attention layer on a real device"
            )
        return tensor.device
    raise TypeError(f"{type(module).__name__} has no parameters; cannot tell which device it runs on")


def model_configs(model: Any, modules: list[torch.nn.Module]) -> list[Any]:
    """The config objects that decide the attention implementation: the model's, its sub-models'
    (they build the masks) and the attention modules' (they pick the attention function)."""
    candidates = [model.config]
    candidates += [m.config for m in model.modules() if hasattr(m, "set_attn_implementation") and hasattr(m, "config")]
    candidates += [m.config for m in modules if getattr(m, "config", None) is not None]
    configs: list[Any] = []
    for config in candidates:
        if all(config is not seen for seen in configs):
            configs.append(config)
    return configs
