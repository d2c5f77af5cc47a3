"""Shared pieces of the HuggingFace tests: tolerances, a mixed profile, greedy decoding, step checks."""

from __future__ import annotations

import torch
from hf_eager_peer import peer_logits

from zerotuning import Profile

# fp32 logits of a two-layer model; the two implementations differ only in summation order.
ATOL, RTOL = 2e-5, 1e-5
NEW_TOKENS = 5


def mixed_profile(model) -> Profile:
    """Different gammas per head and layer, above and below 1, some heads untouched."""
    values = [0.3, 1.0, 2.5, 4.0, 0.7]
    identity = Profile.neutral(model).identity
    gammas = [
        [values[(3 * layer + head) % len(values)] for head in range(identity.num_heads)]
        for layer in range(identity.num_layers)
    ]
    return Profile(identity, gammas)


def logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids, attention_mask=attention_mask).logits


def greedy(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, **options):
    """NEW_TOKENS greedy tokens (EOS suppressed), with the raw logits of every step."""
    with torch.no_grad():
        return model.generate(
            input_ids,
            attention_mask=attention_mask,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
            output_logits=True,
            **options,
        )


def assert_steps_match_peer(model, output, prompt_mask: torch.Tensor, gammas: list[list[float]]) -> None:
    """Each decoding step's logits == the eager peer run without cache on the sequence so far."""
    prompt_length = prompt_mask.shape[1]
    for step, step_logits in enumerate(output.logits):
        length = prompt_length + step
        mask = torch.cat([prompt_mask, torch.ones(prompt_mask.shape[0], step, dtype=prompt_mask.dtype)], dim=1)
        expected = peer_logits(model, output.sequences[:, :length], mask, gammas)[:, -1]
        torch.testing.assert_close(step_logits, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"step {step}: {m}")
