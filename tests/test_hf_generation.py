"""ZeroTuning during KV-cache decoding: dynamic and static caches, sliding windows that evict the sink."""

from __future__ import annotations

import pytest
import torch
from hf_eager_peer import peer_logits
from hf_helpers import ATOL, RTOL, assert_steps_match_peer, greedy, mixed_profile
from tiny_models import FAMILIES, SLIDING_FAMILIES, SLIDING_WINDOW, left_padded, prompts, tiny_model

from zerotuning import applied

# Longer than the sliding window, so that sliding caches drop the initial token while decoding.
PROMPT_LENGTHS = [2 * SLIDING_WINDOW + 1, SLIDING_WINDOW, 2]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_greedy_with_cache_equals_greedy_without_cache(family):
    model = tiny_model(family)
    input_ids, attention_mask = left_padded(prompts(PROMPT_LENGTHS))
    with applied(model, mixed_profile(model)):
        cached = greedy(model, input_ids, attention_mask, use_cache=True)
        uncached = greedy(model, input_ids, attention_mask, use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_dynamic_cache_decoding_matches_the_eager_peer(family):
    model = tiny_model(family)
    profile = mixed_profile(model)
    input_ids, attention_mask = left_padded(prompts(PROMPT_LENGTHS))
    with applied(model, profile):
        output = greedy(model, input_ids, attention_mask, use_cache=True)
    assert_steps_match_peer(model, output, attention_mask, profile.gammas)
    if family in SLIDING_FAMILIES:
        sliding = [layer for layer in output.past_key_values.layers if getattr(layer, "is_sliding", False)]
        assert sliding and all(layer.keys.shape[-2] < output.sequences.shape[1] for layer in sliding), (
            "the sliding cache was expected to have evicted the initial tokens"
        )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_static_cache_decoding_matches_the_eager_peer(family):
    model = tiny_model(family)
    profile = mixed_profile(model)
    input_ids, attention_mask = left_padded(prompts(PROMPT_LENGTHS))
    with applied(model, profile):
        output = greedy(model, input_ids, attention_mask, use_cache=True, cache_implementation="static")
    assert_steps_match_peer(model, output, attention_mask, profile.gammas)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_static_cache_without_padding_matches_the_eager_peer(family):
    """Without padding transformers may skip the prefill mask of a static cache (more keys than queries)."""
    model = tiny_model(family)
    profile = mixed_profile(model)
    input_ids = torch.tensor(prompts([2 * SLIDING_WINDOW - 1], seed=4))
    attention_mask = torch.ones_like(input_ids)
    with applied(model, profile):
        output = greedy(model, input_ids, attention_mask, use_cache=True, cache_implementation="static")
    assert_steps_match_peer(model, output, attention_mask, profile.gammas)


def test_chunked_prefill_matches_the_eager_peer():
    """A prompt fed in two chunks through a dynamic cache: the second chunk's queries see the first."""
    from transformers import DynamicCache

    model = tiny_model("gemma2")
    profile = mixed_profile(model)
    input_ids, attention_mask = left_padded(prompts([11, 7], seed=3))
    split = 6
    with applied(model, profile), torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(input_ids[:, :split], attention_mask=attention_mask[:, :split], past_key_values=cache, use_cache=True)
        second = model(input_ids[:, split:], attention_mask=attention_mask, past_key_values=cache, use_cache=True).logits
    expected = peer_logits(model, input_ids, attention_mask, profile.gammas)[:, split:]
    torch.testing.assert_close(second, expected, atol=ATOL, rtol=RTOL)
