"""attn_implementation="zerotuning" at load time: stock outputs until a profile is applied; zerotuning.from_pretrained."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from hf_helpers import greedy, logits, mixed_profile
from tiny_models import FAMILIES, left_padded, prompts, tiny_config, tiny_model

import zerotuning
from zerotuning import Profile, apply, remove
from zerotuning.hf import BACKEND_NAME, active_profile

ROOT = Path(__file__).resolve().parents[1]


def loaded_with(family: str, implementation: str, **overrides):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(family, **overrides), attn_implementation=implementation)
    return model.eval()


@pytest.fixture(scope="module")
def batch():
    return left_padded(prompts([9, 6, 3]))


def test_import_zerotuning_first_then_transformers_accepts_the_name():
    """In a fresh interpreter: zerotuning imported before transformers' models, registration follows them."""
    script = textwrap.dedent(
        """
        import sys
        import zerotuning
        assert "transformers.modeling_utils" not in sys.modules, "import zerotuning must not import transformers' models"
        import transformers
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        assert "zerotuning" in ALL_ATTENTION_FUNCTIONS.valid_keys()
        config = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=1)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="zerotuning")
        print(model.config._attn_implementation)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "zerotuning"


@pytest.mark.parametrize("first_import", ["from zerotuning import apply", "import zerotuning.hf.backend", "import zerotuning.hf"])
def test_the_glue_imported_before_transformers_still_registers(first_import):
    """The glue itself imports transformers' models: the hook then fires while the backend module is
    half-initialised, and the name must still be registered (no circular import, no warning)."""
    script = textwrap.dedent(
        f"""
        import warnings
        warnings.simplefilter("error")
        {first_import}
        import transformers
        config = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=1)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="zerotuning")
        print(model.config._attn_implementation)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "could not register" not in result.stderr
    assert result.stdout.strip().splitlines()[-1] == "zerotuning"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_loaded_with_zerotuning_gives_exactly_the_stock_outputs(family, batch):
    stock, ours = loaded_with(family, "sdpa"), loaded_with(family, BACKEND_NAME)
    assert ours.config._attn_implementation == BACKEND_NAME
    assert torch.equal(logits(ours, *batch), logits(stock, *batch))
    ours_generated, stock_generated = greedy(ours, *batch), greedy(stock, *batch)
    assert torch.equal(ours_generated.sequences, stock_generated.sequences)
    assert all(torch.equal(a, b) for a, b in zip(ours_generated.logits, stock_generated.logits))


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_apply_then_remove_on_a_model_loaded_with_zerotuning(family, batch):
    stock, ours = loaded_with(family, "sdpa"), loaded_with(family, BACKEND_NAME)
    profile = mixed_profile(ours)
    apply(stock, profile)
    apply(ours, profile)
    assert torch.equal(logits(ours, *batch), logits(stock, *batch))  # the same ZeroTuning path
    remove(ours)
    remove(stock)
    # Back to a working stock implementation, not to a backend that waits for a profile.
    assert ours.config._attn_implementation == "sdpa"
    assert torch.equal(logits(ours, *batch), logits(tiny_model(family), *batch))


def test_a_module_with_a_sink_state_but_no_gammas_is_an_error_not_stock(batch):
    model = loaded_with("llama", BACKEND_NAME)
    apply(model, mixed_profile(model))
    from zerotuning.hf.backend import release_module

    release_module(model.model.layers[0].self_attn)
    with pytest.raises(RuntimeError, match="has no gammas"):
        logits(model, *batch)


def test_from_pretrained_loads_and_applies_in_one_call(tmp_path, batch):
    tiny_model("llama").save_pretrained(tmp_path / "model")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "model", attn_implementation="sdpa").eval()
    profile = mixed_profile(loaded)
    profile.save_pretrained(tmp_path / "profile")
    expected = logits(apply(loaded, profile), *batch)

    model = zerotuning.from_pretrained(tmp_path / "model", profile=tmp_path / "profile", strict=True).eval()
    assert active_profile(model) == profile
    assert torch.equal(logits(model, *batch), expected)
    remove(model)
    assert model.config._attn_implementation == "sdpa"

    plain = zerotuning.from_pretrained(tmp_path / "model").eval()  # no profile: the stock outputs
    assert plain.config._attn_implementation == BACKEND_NAME and active_profile(plain) is None
    assert torch.equal(logits(plain, *batch), logits(remove(loaded), *batch))


def test_from_pretrained_refuses_before_loading(tmp_path, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        zerotuning.from_pretrained(tmp_path, attn_implementation="eager")
    with pytest.raises(FileNotFoundError, match="has no profile.json"):
        zerotuning.from_pretrained(tmp_path, profile=tmp_path)
    with pytest.raises(ValueError, match="profile_revision='v1' given without a profile"):
        zerotuning.from_pretrained(tmp_path, profile_revision="v1")


def test_a_profile_for_another_shape_is_refused_at_load(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "model")
    other = Profile.neutral(tiny_model("llama", num_hidden_layers=3))
    with pytest.raises(ValueError, match="profile is for llama with 3 layers"):
        zerotuning.from_pretrained(tmp_path / "model", profile=other)
