"""Packed sequences (several sequences in one batch row) are refused where the sink bias would be wrong.

transformers packs a row when it is given position_ids that restart at 0, no attention_mask and
no cache (its mask then hides each sequence from the others), and flash-attention style kwargs
(cu_seq_lens_q, ...) announce packing too. One sink per row is right for the row's first sequence
only, so any gamma != 1 on such a forward must be refused, and gamma 1 everywhere must keep the
stock outputs.
"""

from __future__ import annotations

import pytest
import torch
from hf_helpers import ATOL, RTOL, mixed_profile
from tiny_models import FAMILIES, prompts, tiny_model

from zerotuning import Profile, applied
from zerotuning.hf.backend import _PACKED_KWARGS
from zerotuning.hf.differentiable import trainable_log_gammas

LENGTHS = [6, 5]  # the second sequence starts past the tiny models' window of 4


def packed_row() -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, position_ids) of one row holding two sequences."""
    sequences = prompts(LENGTHS)
    input_ids = torch.tensor([sequences[0] + sequences[1]])
    position_ids = torch.tensor([list(range(LENGTHS[0])) + list(range(LENGTHS[1]))])
    return input_ids, position_ids


def stock_model(family: str):
    model = tiny_model(family)
    if family == "gemma2":  # transformers' sdpa path drops Gemma 2's softcapping; eager is its stock attention
        model.set_attn_implementation("eager")
    return model


def packed_logits(model, **kwargs) -> torch.Tensor:
    input_ids, position_ids = packed_row()
    with torch.no_grad():
        return model(input_ids, position_ids=position_ids, use_cache=False, **kwargs).logits


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_position_ids_with_gammas_are_refused_naming_the_model(family):
    model = tiny_model(family)
    with applied(model, mixed_profile(model)), pytest.raises(NotImplementedError) as refused:
        packed_logits(model)
    message = str(refused.value)
    assert "\n" not in message
    assert f"of {type(model).__name__}: packed sequences" in message
    assert "row 0: query 6 sees keys from 6 on" in message
    assert "expected one sequence per row with an attention_mask" in message


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_position_ids_with_all_gammas_one_give_the_stock_outputs(family):
    model = stock_model(family)
    stock = packed_logits(model)
    # The stock model does pack the row: each sequence's logits are those of the sequence alone.
    first, second = prompts(LENGTHS)
    with torch.no_grad():
        alone = torch.cat([model(torch.tensor([first])).logits, model(torch.tensor([second])).logits], dim=1)
    torch.testing.assert_close(stock, alone, atol=ATOL, rtol=RTOL)
    with applied(model, Profile.neutral(model)):
        torch.testing.assert_close(packed_logits(model), stock, atol=ATOL, rtol=RTOL)


def test_only_layers_with_a_gamma_other_than_one_are_refused():
    model = tiny_model("llama")
    with applied(model, Profile.for_heads(model, 2.0, [(1, 3)])):
        with pytest.raises(NotImplementedError, match=r"LlamaAttention \(layer 1\) of LlamaForCausalLM: packed sequences"):
            packed_logits(model)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_sequence_per_row_without_attention_mask_is_not_taken_for_packing(family):
    # Longer than the window, no attention_mask, no cache: the mask is materialised and checked.
    model = tiny_model(family)
    input_ids = torch.tensor(prompts([11]))
    with applied(model, mixed_profile(model)), torch.no_grad():
        unmasked = model(input_ids, use_cache=False).logits
        masked = model(input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits
    torch.testing.assert_close(unmasked, masked, atol=ATOL, rtol=RTOL)


def test_restarting_position_ids_with_an_attention_mask_are_not_packing():
    # transformers packs only without an attention_mask: with one, every query sees the row's
    # first token, as in the stock model, so the row's sink is right.
    model = tiny_model("llama")
    input_ids, position_ids = packed_row()
    with torch.no_grad():
        stock = model(input_ids, attention_mask=torch.ones_like(input_ids), position_ids=position_ids, use_cache=False).logits
        with applied(model, Profile.neutral(model)):
            neutral = model(input_ids, attention_mask=torch.ones_like(input_ids), position_ids=position_ids, use_cache=False).logits
        with applied(model, mixed_profile(model)):
            tuned = model(input_ids, attention_mask=torch.ones_like(input_ids), position_ids=position_ids, use_cache=False).logits
    torch.testing.assert_close(neutral, stock, atol=ATOL, rtol=RTOL)
    assert (tuned - stock).abs().max() > 1e-2


def _flash_packing_kwargs() -> dict[str, torch.Tensor | int]:
    boundaries = torch.tensor([0, LENGTHS[0], sum(LENGTHS)], dtype=torch.int32)
    return dict(cu_seq_lens_q=boundaries, cu_seq_lens_k=boundaries, max_length_q=max(LENGTHS), max_length_k=max(LENGTHS))


@pytest.mark.parametrize("name", sorted(_PACKED_KWARGS))
def test_flash_attention_packing_kwargs_are_refused_with_gammas(name):
    model = tiny_model("llama")
    input_ids = packed_row()[0]
    with applied(model, mixed_profile(model)), torch.no_grad():
        with pytest.raises(NotImplementedError, match=rf"LlamaForCausalLM: packed sequences .*{name}= given.*expected one sequence per row"):
            model(input_ids, **{name: torch.ones(1, dtype=torch.int32)})


def test_flash_attention_packing_kwargs_with_all_gammas_one_give_the_stock_outputs():
    # Stock sdpa ignores these kwargs: its mask, from position_ids, does the packing (without a
    # cache), or there is none (with the default cache).
    model = tiny_model("llama")
    input_ids = packed_row()[0]
    stock_packed = packed_logits(model, **_flash_packing_kwargs())
    with torch.no_grad():
        stock_cached = model(input_ids, **_flash_packing_kwargs()).logits
    with applied(model, Profile.neutral(model)):
        torch.testing.assert_close(packed_logits(model, **_flash_packing_kwargs()), stock_packed, atol=ATOL, rtol=RTOL)
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids, **_flash_packing_kwargs()).logits, stock_cached, atol=ATOL, rtol=RTOL)


def test_differentiable_gammas_are_refused_on_packed_rows_even_at_one():
    # Their gradients would be those of the row's first token for every sequence.
    model = tiny_model("llama")
    with applied(model, Profile.neutral(model)), trainable_log_gammas(model):
        input_ids, position_ids = packed_row()
        with pytest.raises(NotImplementedError, match="packed sequences"):
            model(input_ids, position_ids=position_ids, use_cache=False)
