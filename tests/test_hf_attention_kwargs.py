"""The attention function accepts only keyword arguments it knows to be harmless: the rest is refused, never ignored."""

from __future__ import annotations

import pytest
import torch
import transformers
from hf_helpers import logits, mixed_profile
from tiny_models import FAMILIES, left_padded, prompts, tiny_model

from zerotuning import Profile, apply, remove
from zerotuning.hf.backend import _HARMLESS_WHEN_OFF


@pytest.fixture
def batch():
    return left_padded(prompts([8, 5]))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_what_transformers_passes_for_each_family_is_accepted(family, batch):
    # Forward with the kwargs users commonly pass, plus cached greedy decoding: all of them reach
    # the attention function (position_ids, use_cache, output_hidden_states, output_attentions=False, ...).
    model = tiny_model(family)
    input_ids, attention_mask = batch
    apply(model, mixed_profile(model))
    try:
        with torch.no_grad():
            plain = model(input_ids, attention_mask=attention_mask).logits
            out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True, output_attentions=False,
                        use_cache=False, return_dict=True)
            model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=2, do_sample=False, pad_token_id=0)
        assert torch.equal(out.logits, plain)
    finally:
        remove(model)


def test_an_unknown_keyword_argument_is_refused_naming_it_and_the_model(batch):
    model = tiny_model("llama")
    apply(model, mixed_profile(model))
    with pytest.raises(NotImplementedError, match=r"LlamaAttention \(layer 0\) of LlamaForCausalLM: .*made_up_bias="), torch.no_grad():
        model(batch[0], attention_mask=batch[1], made_up_bias=torch.zeros(3))


@pytest.mark.parametrize("name", sorted(_HARMLESS_WHEN_OFF))
def test_features_the_kernel_lacks_are_accepted_only_when_off(name, batch):
    model = tiny_model("llama")
    apply(model, mixed_profile(model))
    expected = logits(model, *batch)
    with torch.no_grad():
        assert torch.equal(model(batch[0], attention_mask=batch[1], **{name: None}).logits, expected)
        with pytest.raises(NotImplementedError, match=rf"LlamaForCausalLM: .*\({name}=\.\.\.\) is not supported"):
            model(batch[0], attention_mask=batch[1], **{name: torch.ones(1, dtype=torch.int32)})


# v_head_dim = qk_nope_head_dim + qk_rope_head_dim: the kernel takes one head dim for q, k and v.
def _tiny_sparse_attention_model(config_name: str):
    config = getattr(transformers, config_name)(
        vocab_size=96, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=4, n_group=1, topk_group=1,
        num_experts_per_tok=2, kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8, v_head_dim=24, qk_nope_head_dim=16,
        head_dim=8, index_topk=2, index_head_dim=16, index_n_heads=2, first_k_dense_replace=1,
        max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32).eval()


@pytest.mark.parametrize("config_name", ["DeepseekV32Config", "GlmMoeDsaConfig"])
def test_sparse_top_k_attention_is_refused_not_run_dense(config_name, batch):
    if not hasattr(transformers, config_name):
        pytest.skip(f"transformers {transformers.__version__} has no {config_name}")
    model = _tiny_sparse_attention_model(config_name)
    apply(model, Profile.neutral(model))
    with pytest.raises(NotImplementedError, match=r"Attention \(layer 0\) of \w+ForCausalLM: sparse top-k .*\(indices=\.\.\.\)"):
        logits(model, *batch)
    remove(model)
    logits(model, *batch)  # and it runs again once removed
