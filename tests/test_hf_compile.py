"""torch.compile(model) with ZeroTuning, and gamma swaps that need no recompilation."""

from __future__ import annotations

import os

import pytest
import torch
import torch._dynamo
from hf_helpers import ATOL, RTOL, assert_steps_match_peer, greedy, mixed_profile
from tiny_models import left_padded, prompts, tiny_model

from zerotuning import Profile, apply, applied


def test_compiled_model_matches_eager_and_follows_gamma_swaps():
    model = tiny_model("gemma2")
    input_ids, attention_mask = left_padded(prompts([9, 5]))
    kept = attention_mask.bool()
    first, second = mixed_profile(model), Profile.uniform(model, 0.4)
    expected = {}
    with torch.no_grad():
        for name, profile in (("first", first), ("second", second)):
            apply(model, profile)
            expected[name] = model(input_ids, attention_mask=attention_mask).logits
        torch._dynamo.reset()
        compiled = torch.compile(model)
        apply(model, first)
        got = compiled(input_ids, attention_mask=attention_mask).logits
        torch.testing.assert_close(got[kept], expected["first"][kept], atol=ATOL, rtol=RTOL)
        apply(model, second)
        with torch._dynamo.config.patch(error_on_recompile=True):
            got = compiled(input_ids, attention_mask=attention_mask).logits
        torch.testing.assert_close(got[kept], expected["second"][kept], atol=ATOL, rtol=RTOL)
    torch._dynamo.reset()


@pytest.mark.skipif(
    os.environ.get("ZEROTUNING_SLOW_TESTS") != "1",
    reason="compiles prefill and decode graphs (about a minute on 2 CPU cores); set ZEROTUNING_SLOW_TESTS=1",
)
def test_compiled_forward_generates_with_a_static_cache_like_the_eager_peer():
    model = tiny_model("llama")
    profile = mixed_profile(model)
    input_ids, attention_mask = left_padded(prompts([7, 4]))
    torch._dynamo.reset()
    with applied(model, profile):
        model.forward = torch.compile(model.forward)
        try:
            output = greedy(model, input_ids, attention_mask, use_cache=True, cache_implementation="static")
        finally:
            del model.forward
    torch._dynamo.reset()
    assert_steps_match_peer(model, output, attention_mask, profile.gammas)
