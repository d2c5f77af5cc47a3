"""Where the vLLM plugin finds its profile, what it refuses and how it swaps gammas (no vLLM needed)."""

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import Gemma3TextConfig, LlamaConfig

from zerotuning import ModelIdentity, Profile
from zerotuning.export import PROFILE_FILE
from zerotuning.vllm import layer_gammas
from zerotuning.vllm.layer_gammas import ServedProfile, find_profile, layer_index


def llama_config(**overrides):
    settings = dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                    intermediate_size=64, vocab_size=100)
    return LlamaConfig(**{**settings, **overrides})


def identity_of(config):
    return ModelIdentity.of(SimpleNamespace(config=config))


def vllm_config(model, additional=None, hf_config=None):
    return SimpleNamespace(model_config=SimpleNamespace(model=str(model), hf_config=hf_config), additional_config=additional)


def test_additional_config_comes_before_the_model_folder_file(tmp_path):
    identity = identity_of(llama_config())
    Profile.uniform(identity, 2.0).save(tmp_path / PROFILE_FILE)
    other = Profile.uniform(identity, 0.5).save(tmp_path / "other.json")
    profile, source = find_profile(vllm_config(tmp_path, {"zerotuning_profile": str(other)}))
    assert profile.gammas[0][0] == 0.5 and "additional_config" in source
    profile, source = find_profile(vllm_config(tmp_path, {}))
    assert profile.gammas[0][0] == 2.0 and "model folder" in source
    assert find_profile(vllm_config(tmp_path / "elsewhere", None)) is None


def test_a_missing_additional_config_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"zerotuning_profile: .*nothere\.json.* does not exist"):
        find_profile(vllm_config(tmp_path, {"zerotuning_profile": str(tmp_path / "nothere.json")}))


def test_served_log_gammas_and_active_layers():
    config = llama_config()
    identity = identity_of(config)
    profile = Profile.for_heads(identity, 3.0, [(1, 2)])
    served = ServedProfile.create(profile, "test", config)
    assert served.active == [False, True, False]
    assert served.log_gammas[1, 2].item() == pytest.approx(math.log(3.0))
    assert torch.count_nonzero(served.log_gammas) == 1


def test_swap_changes_the_views_layers_hold():
    config = llama_config()
    identity = identity_of(config)
    served = ServedProfile.create(Profile.neutral(identity), "test", config)
    view = served.layer_view(2, 4, 0)
    served.swap(Profile.uniform(identity, 2.0, layers=[2]))
    assert torch.allclose(view, torch.full((4,), math.log(2.0)))
    assert served.active == [False, False, True]
    served.swap(Profile.neutral(identity))
    assert not any(served.active) and torch.count_nonzero(view) == 0


def test_tensor_parallel_ranks_get_their_head_slices():
    config = llama_config()
    served = ServedProfile.create(Profile.for_heads(identity_of(config), 2.0, [(0, 3)]), "test", config)
    assert torch.count_nonzero(served.layer_view(0, 2, 0)) == 0
    assert served.layer_view(0, 2, 1)[1].item() == pytest.approx(math.log(2.0))
    with pytest.raises(ValueError, match="3 query heads on this rank"):
        served.layer_view(0, 3, 0)


def test_a_profile_for_another_model_is_refused():
    config = llama_config()
    wrong = Profile.uniform(ModelIdentity("llama", 3, 8, 2), 2.0)
    with pytest.raises(ValueError, match="zerotuning profile here.json: profile is for llama with 3 layers x 8"):
        ServedProfile.create(wrong, "here.json", config)
    served = ServedProfile.create(Profile.neutral(identity_of(config)), "test", config)
    with pytest.raises(ValueError, match="swap to a profile for"):
        served.swap(wrong)


def test_another_configuration_of_the_same_shape_is_refused_when_the_profile_has_a_fingerprint():
    tuned_on = llama_config(rms_norm_eps=1e-6)
    served_config = llama_config(rms_norm_eps=1e-5)
    profile = Profile.uniform(identity_of(tuned_on), 2.0)
    with pytest.raises(ValueError, match="strict=True"):
        ServedProfile.create(profile, "test", served_config)


def test_gamma_on_sliding_window_layers_is_refused():
    config = Gemma3TextConfig(
        num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, hidden_size=32, head_dim=16,
        intermediate_size=64, vocab_size=100, sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
    )
    identity = identity_of(config)
    served = ServedProfile.create(Profile.uniform(identity, 2.0, layers=[3]), "p.json", config)
    assert served.active == [False, False, False, True]
    with pytest.raises(ValueError, match="layer 0 is a sliding-window layer"):
        served.swap(Profile.uniform(identity, 2.0))
    assert served.active == [False, False, False, True]  # a refused swap changes nothing


def test_layer_index_from_vllm_layer_names():
    assert layer_index("model.layers.12.self_attn.attn") == 12
    assert layer_index("language_model.model.layers.0.self_attn.attn") == 0
    with pytest.raises(ValueError, match="cannot tell the decoder layer"):
        layer_index("model.decoder.attn")


def test_the_served_profile_is_read_once_per_model(tmp_path, monkeypatch):
    config = llama_config()
    Profile.uniform(identity_of(config), 2.0).save(tmp_path / PROFILE_FILE)
    monkeypatch.setattr(layer_gammas, "_SERVED", {})
    first = layer_gammas.served_profile(vllm_config(tmp_path, None, config))
    assert layer_gammas.served_profile(vllm_config(tmp_path, None, config)) is first
    assert layer_gammas.served_profile(vllm_config(tmp_path / "plain", None, config)) is None


def test_device_views_follow_swaps():
    config = llama_config()
    identity = identity_of(config)
    served = ServedProfile.create(Profile.neutral(identity), "test", config)
    assert served.layer_view(1, 2, 1, device="cpu").data_ptr() == served.layer_view(1, 2, 1).data_ptr()
    if not torch.cuda.is_available():
        return
    view = served.layer_view(1, 2, 1, device=torch.device("cuda", 0))
    assert view.is_cuda and torch.equal(view.cpu(), torch.zeros(2))
    served.swap(Profile.for_heads(identity, 2.0, [(1, 3)]))
    assert view.cpu().tolist() == pytest.approx([0.0, math.log(2.0)])
