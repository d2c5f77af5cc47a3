"""Tiny random-weight decoders of each supported family, for tests (no downloads).

``tiny_model(family, **overrides)`` returns a float32 model in eval mode with the stock ``sdpa``
attention, built from a seeded random init, so the same call always gives the same weights.
Sliding-window families get a window of 4 keys, shorter than the test prompts, so that the
window hides (and sliding caches evict) the initial token.
"""

from __future__ import annotations

import torch
import transformers

VOCAB_SIZE = 96
BOS_TOKEN_ID = 1
PAD_TOKEN_ID = 0
SLIDING_WINDOW = 4

_COMMON = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=BOS_TOKEN_ID,
    eos_token_id=2,
    pad_token_id=PAD_TOKEN_ID,
    tie_word_embeddings=False,
    # A wider init than the default 0.02 gives peaked attention, so that rescaling the sink
    # visibly changes the logits.
    initializer_range=0.25,
)

_ALTERNATING = ["sliding_attention", "full_attention"]

FAMILIES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", dict(use_sliding_window=True, sliding_window=SLIDING_WINDOW, layer_types=_ALTERNATING)),
    "qwen3": ("Qwen3Config", dict(head_dim=16, use_sliding_window=True, sliding_window=SLIDING_WINDOW, layer_types=_ALTERNATING)),
    "mistral": ("MistralConfig", dict(head_dim=16, sliding_window=SLIDING_WINDOW)),
    "gemma2": (
        "Gemma2Config",
        dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=SLIDING_WINDOW, layer_types=_ALTERNATING,
             attn_logit_softcapping=5.0, final_logit_softcapping=30.0),
    ),
    "gemma3": (
        "Gemma3TextConfig",
        dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=SLIDING_WINDOW, layer_types=_ALTERNATING),
    ),
    "phi3": ("Phi3Config", dict(sliding_window=None)),
    # Not in the tested list of the issue: any decoder using the attention interface should work.
    "olmo2": ("Olmo2Config", {}),
}

SLIDING_FAMILIES = ("qwen2", "qwen3", "mistral", "gemma2", "gemma3")


def tiny_config(family: str, **overrides):
    """The config ``tiny_model`` builds, with ``overrides`` applied on top."""
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {sorted(FAMILIES)}, got {family!r}")
    class_name, extra = FAMILIES[family]
    config_class = getattr(transformers, class_name)
    return config_class(**{**_COMMON, **extra, **overrides})


def tiny_model(family: str, **overrides) -> torch.nn.Module:
    """A seeded random-weight causal LM of ``family`` in eval mode, float32, sdpa attention."""
    config = tiny_config(family, **overrides)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval()


def prompts(lengths: list[int], seed: int = 0) -> list[list[int]]:
    """Random token prompts, each starting with BOS, avoiding the pad and eos ids."""
    generator = torch.Generator().manual_seed(seed)
    return [
        [BOS_TOKEN_ID] + torch.randint(3, VOCAB_SIZE, (length - 1,), generator=generator).tolist()
        for length in lengths
    ]


def left_padded(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every sequence left-padded to the longest one."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), PAD_TOKEN_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, width - len(sequence):] = torch.tensor(sequence)
        attention_mask[row, width - len(sequence):] = 1
    return input_ids, attention_mask
