"""Models placed by a device_map (accelerate hooks on every block) take ZeroTuning like any other.

This box has one device (CPU), so the placement itself is trivial; the hooks that move inputs
between blocks are forced on. The cross-device path (sinks copied once per device and forward)
is covered by test_hf_sinks.py.
"""

from __future__ import annotations

import pytest
import torch
from hf_helpers import ATOL, RTOL, mixed_profile
from tiny_models import left_padded, prompts, tiny_model

from zerotuning import applied

accelerate = pytest.importorskip("accelerate", reason="device_map placement needs accelerate")


def logits_with(model, profile, input_ids, attention_mask) -> torch.Tensor:
    with applied(model, profile), torch.no_grad():
        return model(input_ids, attention_mask=attention_mask).logits


def test_from_pretrained_with_a_device_map(tmp_path):
    from transformers import AutoModelForCausalLM

    plain = tiny_model("gemma2")
    plain.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, device_map="cpu", attn_implementation="sdpa").eval()
    profile = mixed_profile(plain)
    input_ids, attention_mask = left_padded(prompts([9, 5]))
    kept = attention_mask.bool()
    expected = logits_with(plain, profile, input_ids, attention_mask)
    got = logits_with(loaded, profile, input_ids, attention_mask)
    torch.testing.assert_close(got[kept], expected[kept], atol=ATOL, rtol=RTOL)


def test_dispatched_blocks_with_device_hooks():
    plain, dispatched = tiny_model("gemma2"), tiny_model("gemma2")
    blocks = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "model.rotary_emb", "lm_head"]
    accelerate.dispatch_model(dispatched, device_map={name: "cpu" for name in blocks}, force_hooks=True)
    assert hasattr(dispatched.model.layers[0], "_hf_hook"), "accelerate did not hook the decoder layers"
    profile = mixed_profile(plain)
    input_ids, attention_mask = left_padded(prompts([9, 5]))
    kept = attention_mask.bool()
    expected = logits_with(plain, profile, input_ids, attention_mask)
    got = logits_with(dispatched, profile, input_ids, attention_mask)
    torch.testing.assert_close(got[kept], expected[kept], atol=ATOL, rtol=RTOL)
