"""ZeroTuning on tiny models of each family: neutral == stock attention, gamma != 1 == the eager peer."""

from __future__ import annotations

import pytest
import torch
from hf_eager_peer import eager_peer, peer_logits
from hf_helpers import ATOL, RTOL, logits, mixed_profile
from tiny_models import FAMILIES, left_padded, prompts, tiny_model

from zerotuning import Profile, applied


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_neutral_profile_matches_stock_attention(family):
    model = tiny_model(family)
    if family == "gemma2":
        # transformers' sdpa path drops Gemma 2's logit softcapping; eager is Gemma 2's stock attention.
        model.set_attn_implementation("eager")
    input_ids, attention_mask = left_padded(prompts([9, 6, 3]))
    expected = logits(model, input_ids, attention_mask)
    with applied(model, Profile.neutral(model)):
        got = logits(model, input_ids, attention_mask)
    kept = attention_mask.bool()
    torch.testing.assert_close(got[kept], expected[kept], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mixed_gammas_match_the_eager_peer(family):
    model = tiny_model(family)
    profile = mixed_profile(model)
    input_ids, attention_mask = left_padded(prompts([9, 6, 3]))
    expected = peer_logits(model, input_ids, attention_mask, profile.gammas)
    neutral = peer_logits(model, input_ids, attention_mask, Profile.neutral(model).gammas)
    with applied(model, profile):
        got = logits(model, input_ids, attention_mask)
    kept = attention_mask.bool()
    torch.testing.assert_close(got[kept], expected[kept], atol=ATOL, rtol=RTOL)
    assert (got[kept] - neutral[kept]).abs().max() > 100 * ATOL, "the profile did not change the logits"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_left_padded_batch_equals_each_sequence_alone(family):
    model = tiny_model(family)
    sequences = prompts([9, 6, 3], seed=1)
    input_ids, attention_mask = left_padded(sequences)
    with applied(model, mixed_profile(model)):
        batched = logits(model, input_ids, attention_mask)
        for row, sequence in enumerate(sequences):
            alone = logits(model, torch.tensor([sequence]), torch.ones(1, len(sequence), dtype=torch.long))
            torch.testing.assert_close(batched[row, -len(sequence):], alone[0], atol=ATOL, rtol=RTOL)


def test_published_index_zero_sink_would_differ_under_left_padding():
    """Guards the test above: putting the sink at key 0 (a pad) instead of the first token changes the result."""
    model = tiny_model("llama")
    profile = mixed_profile(model)
    input_ids, attention_mask = left_padded(prompts([9, 4], seed=2))
    right_sink = peer_logits(model, input_ids, attention_mask, profile.gammas)
    with eager_peer(model, profile.gammas, torch.zeros(2, dtype=torch.long)), torch.no_grad():
        index_zero = model(input_ids, attention_mask=attention_mask, use_cache=False).logits
    with applied(model, profile):
        got = logits(model, input_ids, attention_mask)
    padded_row = 1
    kept = attention_mask[padded_row].bool()
    torch.testing.assert_close(got[padded_row, kept], right_sink[padded_row, kept], atol=ATOL, rtol=RTOL)
    assert (got[padded_row, kept] - index_zero[padded_row, kept]).abs().max() > 100 * ATOL
