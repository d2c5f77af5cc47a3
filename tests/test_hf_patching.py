"""apply / remove / applied: reversibility, idempotence, validation and clear refusals."""

from __future__ import annotations

import math

import pytest
import torch
from hf_helpers import logits, mixed_profile
from tiny_models import left_padded, prompts, tiny_model

from zerotuning import Profile, apply, applied, remove
from zerotuning.hf import BACKEND_NAME, active_profile
from zerotuning.hf.backend import LOG_GAMMA_BITS


@pytest.fixture
def batch():
    return left_padded(prompts([8, 5]))


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_remove_restores_the_previous_implementation_bit_for_bit(implementation, batch):
    model = tiny_model("gemma2")
    model.set_attn_implementation(implementation)
    before = logits(model, *batch)
    apply(model, mixed_profile(model))
    assert model.config._attn_implementation == BACKEND_NAME
    assert not torch.equal(logits(model, *batch), before)
    remove(model)
    assert model.config._attn_implementation == implementation
    assert torch.equal(logits(model, *batch), before)
    assert not any(hasattr(module, LOG_GAMMA_BITS) for module in model.modules())
    assert active_profile(model) is None


def test_remove_on_an_unpatched_model_changes_nothing(batch):
    model = tiny_model("llama")
    before = logits(model, *batch)
    assert remove(model) is model
    assert torch.equal(logits(model, *batch), before)


def test_apply_again_only_swaps_gammas(batch):
    model = tiny_model("qwen2")
    first, second = Profile.uniform(model, 3.0), mixed_profile(model)
    apply(model, first)
    buffers = [getattr(m, LOG_GAMMA_BITS) for m in model.modules() if hasattr(m, LOG_GAMMA_BITS)]
    hooks = len(model._forward_hooks)
    apply(model, second)
    after = [getattr(m, LOG_GAMMA_BITS) for m in model.modules() if hasattr(m, LOG_GAMMA_BITS)]
    assert all(a is b for a, b in zip(buffers, after, strict=True)), "apply() must update the buffers in place"
    assert len(model._forward_hooks) == hooks
    fresh = tiny_model("qwen2")
    apply(fresh, second)
    assert torch.equal(logits(model, *batch), logits(fresh, *batch))
    assert active_profile(model) is second


def test_applied_restores_the_state_before_entry(batch):
    model = tiny_model("mistral")
    stock = logits(model, *batch)
    outer, inner = Profile.uniform(model, 2.0), mixed_profile(model)
    with applied(model, outer):
        with_outer = logits(model, *batch)
        with applied(model, inner):
            assert not torch.equal(logits(model, *batch), with_outer)
        assert torch.equal(logits(model, *batch), with_outer)
        assert active_profile(model) is outer
    assert torch.equal(logits(model, *batch), stock)


def test_applied_removes_even_when_the_body_raises(batch):
    model = tiny_model("llama")
    with pytest.raises(KeyError), applied(model, mixed_profile(model)):
        raise KeyError("inside")
    assert model.config._attn_implementation == "sdpa"


def test_a_profile_for_another_model_shape_is_refused():
    model = tiny_model("llama")
    other = tiny_model("llama", num_hidden_layers=3)
    with pytest.raises(ValueError, match=r"2 layers x 4 query heads.*3 layers x 4 query heads|3 layers.*2 layers"):
        apply(model, Profile.neutral(other))
    assert model.config._attn_implementation == "sdpa"
    apply(model, Profile.neutral(model))
    with pytest.raises(ValueError, match="3 layers"):
        apply(model, Profile.neutral(other))


def test_a_profile_for_another_model_type_is_refused():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="mistral.*llama"):
        apply(model, Profile.neutral(tiny_model("mistral")))


def test_models_without_the_attention_interface_are_refused_by_name():
    from transformers import MambaConfig, MambaForCausalLM

    mamba = MambaForCausalLM(MambaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, state_size=4))
    with pytest.raises(TypeError, match="MambaForCausalLM does not route its attention"):
        apply(mamba, Profile.neutral(tiny_model("llama")))
    with pytest.raises(TypeError, match="Linear"):
        apply(torch.nn.Linear(2, 2), Profile.neutral(tiny_model("llama")))


def test_output_attentions_is_refused(batch):
    model = tiny_model("llama")
    apply(model, mixed_profile(model))
    with pytest.raises(NotImplementedError, match="output_attentions"), torch.no_grad():
        model(*batch[:1], attention_mask=batch[1], output_attentions=True)


def test_attention_dropout_in_training_is_refused(batch):
    model = tiny_model("llama", attention_dropout=0.1)
    apply(model, mixed_profile(model))
    model.train()
    with pytest.raises(NotImplementedError, match="dropout"):
        model(batch[0], attention_mask=batch[1])
    model.eval()
    logits(model, *batch)


def test_a_prebuilt_4d_mask_is_refused(batch):
    model = tiny_model("llama")
    apply(model, mixed_profile(model))
    input_ids, attention_mask = batch
    length = input_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    mask_4d = (causal[None, None] & attention_mask.bool()[:, None, None, :]).contiguous()
    with pytest.raises(RuntimeError, match="no sink positions were recorded"), torch.no_grad():
        model(input_ids, attention_mask=mask_4d)


def test_gammas_survive_a_dtype_cast_after_apply(batch):
    model = tiny_model("llama")
    profile = mixed_profile(model)
    apply(model, profile)
    model.to(torch.bfloat16)
    expected = torch.tensor([[math.log(g) for g in row] for row in profile.gammas], dtype=torch.float32)
    for layer, module in enumerate(m for m in model.modules() if hasattr(m, LOG_GAMMA_BITS)):
        assert torch.equal(getattr(module, LOG_GAMMA_BITS).view(torch.float32), expected[layer])
    assert logits(model, *batch).dtype == torch.bfloat16


def test_nothing_is_added_to_the_state_dict_or_the_saved_config():
    model = tiny_model("gemma3")
    keys = set(model.state_dict())
    apply(model, mixed_profile(model))
    assert set(model.state_dict()) == keys
    assert BACKEND_NAME not in model.config.to_json_string()


def test_a_copied_model_fails_loudly(batch):
    import copy

    model = tiny_model("llama")
    apply(model, mixed_profile(model))
    clone = copy.deepcopy(model)
    with pytest.raises(RuntimeError, match="zerotuning.apply"), torch.no_grad():
        clone(batch[0], attention_mask=batch[1])
    # The original is unaffected, and the copy runs once it is removed and applied again.
    expected = logits(model, *batch)
    remove(clone)
    apply(clone, mixed_profile(clone))
    assert torch.equal(logits(clone, *batch), expected)
    assert torch.equal(logits(model, *batch), expected)


def test_a_failed_switch_leaves_the_model_untouched(batch, monkeypatch):
    model = tiny_model("llama")
    before = logits(model, *batch)
    monkeypatch.setattr(model, "set_attn_implementation", lambda implementation: None)
    with pytest.raises(TypeError, match="refused to switch"):
        apply(model, mixed_profile(model))
    assert active_profile(model) is None and not model._forward_hooks
    assert not any(hasattr(module, LOG_GAMMA_BITS) for module in model.modules())
    assert torch.equal(logits(model, *batch), before)


def test_layers_on_the_meta_device_are_refused_before_any_change():
    model = tiny_model("llama")
    model.model.layers[1].to("meta")
    with pytest.raises(TypeError, match="LlamaAttention \\(layer 1\\) has its weights on the meta device"):
        apply(model, Profile.neutral(model))
    assert active_profile(model) is None
    assert not any(hasattr(module, LOG_GAMMA_BITS) for module in model.modules())


def _gammas_in_buffers(model) -> list[list[float]]:
    modules = [m for m in model.modules() if hasattr(m, LOG_GAMMA_BITS)]
    return [[round(math.exp(value), 6) for value in getattr(m, LOG_GAMMA_BITS).view(torch.float32).tolist()] for m in modules]


@pytest.mark.parametrize("first_inside", [True, False])
def test_apply_works_inside_and_outside_inference_mode_in_any_order(first_inside, batch):
    model = tiny_model("llama")
    first, second = Profile.uniform(model, 2.0), mixed_profile(model)
    mode = torch.inference_mode if first_inside else torch.no_grad
    other = torch.no_grad if first_inside else torch.inference_mode
    with mode():
        apply(model, first)
    with other():
        apply(model, second)
    assert active_profile(model) is second
    reference = tiny_model("llama")
    with applied(reference, second):
        expected = logits(reference, *batch)
    assert torch.equal(logits(model, *batch), expected)
    with torch.inference_mode():
        assert torch.equal(model(batch[0], attention_mask=batch[1]).logits, expected)
    remove(model)


def test_a_failed_gamma_update_changes_no_layer(batch, monkeypatch):
    from zerotuning.hf import backend

    model = tiny_model("llama")
    first = Profile.uniform(model, 2.0)
    apply(model, first)
    before = logits(model, *batch)
    real_set = backend.set_log_gammas
    calls = []

    def fail_on_the_second_layer(module, log_gammas):
        calls.append(module)
        if len(calls) == 2:
            raise RuntimeError("copy failed")
        real_set(module, log_gammas)

    monkeypatch.setattr(backend, "set_log_gammas", fail_on_the_second_layer)
    with pytest.raises(RuntimeError, match="copy failed"):
        apply(model, mixed_profile(model))
    monkeypatch.setattr(backend, "set_log_gammas", real_set)
    assert active_profile(model) is first
    assert _gammas_in_buffers(model) == [[2.0] * 4, [2.0] * 4]
    assert torch.equal(logits(model, *batch), before)


def test_a_failed_first_apply_leaves_the_model_untouched(batch, monkeypatch):
    from zerotuning.hf import backend

    model = tiny_model("llama")
    before = logits(model, *batch)

    def fail(module, log_gammas):
        raise RuntimeError("copy failed")

    monkeypatch.setattr(backend, "set_log_gammas", fail)
    with pytest.raises(RuntimeError, match="copy failed"):
        apply(model, mixed_profile(model))
    assert active_profile(model) is None and model.config._attn_implementation == "sdpa"
    assert not any(hasattr(module, LOG_GAMMA_BITS) for module in model.modules())
    assert torch.equal(logits(model, *batch), before)


def test_nested_applications_are_refused_and_remove_always_leaves_a_working_model(batch):
    model = tiny_model("llama")
    stock = logits(model, *batch)
    profile = mixed_profile(model)
    apply(model, profile)
    tuned = logits(model, *batch)
    with pytest.raises(ValueError, match="LlamaModel: its attention layers are already under ZeroTuning applied to an enclosing model \\(LlamaForCausalLM\\)"):
        apply(model.model, profile)
    with pytest.raises(ValueError, match="remove\\(LlamaModel\\): ZeroTuning was applied to an enclosing model \\(LlamaForCausalLM\\)"):
        remove(model.model)
    assert active_profile(model) is profile and torch.equal(logits(model, *batch), tuned)
    remove(model)
    remove(model.model)  # nothing applied anywhere any more: a no-op
    assert model.config._attn_implementation == "sdpa" and torch.equal(logits(model, *batch), stock)

    # Applied to the inner model first: the outer one is refused, and removing the outer one removes it.
    apply(model.model, profile)
    assert torch.equal(logits(model, *batch), tuned)
    with pytest.raises(ValueError, match="LlamaForCausalLM: ZeroTuning is already applied to its submodule 'model' \\(LlamaModel\\)"):
        apply(model, profile)
    assert torch.equal(logits(model, *batch), tuned)
    remove(model)
    assert active_profile(model.model) is None and model.config._attn_implementation == "sdpa"
    assert not any(hasattr(module, LOG_GAMMA_BITS) for module in model.modules())
    assert torch.equal(logits(model, *batch), stock)


def test_remove_finishes_even_when_transformers_fails_to_switch_back(batch, monkeypatch):
    model = tiny_model("llama")
    stock = logits(model, *batch)
    apply(model, mixed_profile(model))

    def broken_switch(implementation):
        raise RuntimeError("switch failed")

    monkeypatch.setattr(model, "set_attn_implementation", broken_switch)
    with pytest.raises(RuntimeError, match="switch failed"):
        remove(model)
    monkeypatch.undo()
    assert active_profile(model) is None and model.config._attn_implementation == "sdpa"
    assert not any(hasattr(module, LOG_GAMMA_BITS) for module in model.modules()) and not model._forward_hooks
    assert torch.equal(logits(model, *batch), stock)
