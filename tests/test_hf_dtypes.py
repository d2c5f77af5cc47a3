"""Half-precision weights: ZeroTuning's error stays within that of the precision itself."""

from __future__ import annotations

import pytest
import torch
from hf_eager_peer import peer_logits
from hf_helpers import mixed_profile
from tiny_models import left_padded, prompts, tiny_model

from zerotuning import applied


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_half_precision_error_is_bounded_by_the_eager_peer_in_that_precision(family, dtype):
    model = tiny_model(family)
    profile = mixed_profile(model)
    input_ids, attention_mask = left_padded(prompts([9, 5]))
    kept = attention_mask.bool()
    exact = peer_logits(model, input_ids, attention_mask, profile.gammas)[kept]
    model.to(dtype)
    peer = peer_logits(model, input_ids, attention_mask, profile.gammas)[kept].float()
    with applied(model, profile), torch.no_grad():
        got = model(input_ids, attention_mask=attention_mask).logits[kept]
    assert got.dtype == dtype
    error, peer_error = (got.float() - exact).abs().max(), (peer - exact).abs().max()
    assert error <= 2 * peer_error + 1e-3, f"{dtype}: error {error:.4g} vs the eager peer's {peer_error:.4g}"
