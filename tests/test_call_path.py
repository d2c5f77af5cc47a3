"""The lean call path: the op called below autograd without grad mode, the cached log-gamma view."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import mixed_profile
from tiny_models import tiny_model

from zerotuning import apply, remove, sink_attention
from zerotuning.hf import backend


def _inputs(requires_grad: bool):
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 6, 5, 16, generator=gen, requires_grad=requires_grad)
    k = torch.randn(2, 2, 9, 16, generator=gen, requires_grad=requires_grad)
    v = torch.randn(2, 2, 9, 16, generator=gen, requires_grad=requires_grad)
    log_gamma = torch.linspace(-1.0, 1.0, 6).requires_grad_(requires_grad)
    return q, k, v, log_gamma


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_the_op_without_grad_mode_gives_bit_for_bit_the_grad_mode_result(mode):
    q, k, v, log_gamma = _inputs(requires_grad=True)
    sink_index = torch.tensor([0, 3])
    with_grad = sink_attention(q, k, v, log_gamma, sink_index=sink_index, is_causal=True, return_lse=True)
    assert with_grad[0].grad_fn is not None
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:
        without = sink_attention(q, k, v, log_gamma, sink_index=sink_index, is_causal=True, return_lse=True)
    for a, b in zip(with_grad, without):
        assert torch.equal(a.detach(), b)
        assert b.grad_fn is None and not b.requires_grad


def test_the_op_without_grad_mode_still_refuses_bad_arguments():
    q, k, v, log_gamma = _inputs(requires_grad=False)
    with torch.no_grad(), pytest.raises(RuntimeError, match="log_gamma must have shape"):
        sink_attention(q, k, v, log_gamma[:4])


def test_the_log_gamma_view_follows_updates_and_replaced_buffers():
    module = torch.nn.Linear(2, 2)
    backend.prepare_module(module, 3, torch.device("cpu"))
    view = backend.log_gamma_of(module)
    assert view.dtype == torch.float32 and view.tolist() == [0.0, 0.0, 0.0]
    backend.set_log_gammas(module, torch.tensor([0.5, -1.0, 2.0]))
    assert backend.log_gamma_of(module) is view and view.tolist() == [0.5, -1.0, 2.0]
    # module.to(...) / load_state_dict-like replacement puts a new tensor in the buffer slot.
    module._buffers[backend.LOG_GAMMA_BITS] = torch.tensor([1.0, 0.25, -0.5]).view(torch.int32)
    assert backend.log_gamma_of(module).tolist() == [1.0, 0.25, -0.5]
    backend.release_module(module)
    with pytest.raises(RuntimeError, match="did not prepare it"):
        backend.log_gamma_of(module)


def test_a_tuned_model_keeps_its_exact_gammas_through_half_and_back():
    model = tiny_model("llama")
    apply(model, mixed_profile(model))
    prepared = [m for m in model.modules() if backend.LOG_GAMMA_BITS in m._buffers]
    before = [backend.log_gamma_of(m).clone() for m in prepared]
    assert prepared and any(bool(b.ne(0).any()) for b in before)
    model.half().float()  # int32 bit buffers are not cast: the values, and the cached views, stay exact
    assert all(torch.equal(backend.log_gamma_of(m), b) for m, b in zip(prepared, before))
    remove(model)


def _prefill_and_two_steps(model, input_ids, attention_mask) -> list[torch.Tensor]:
    """Logits of a prefill and of two cached greedy decoding steps."""
    out = model(input_ids, attention_mask=attention_mask, use_cache=True)
    logits, cache = [out.logits], out.past_key_values
    for _ in range(2):
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        out = model(logits[-1][:, -1:].argmax(-1), attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        logits.append(out.logits)
    return logits


@pytest.mark.parametrize("family", ["llama", "gemma2", "gemma3", "qwen2"])
@pytest.mark.parametrize("padded", [False, True])
def test_the_inline_inference_path_gives_bit_for_bit_the_checked_path(family, padded, monkeypatch):
    from tiny_models import left_padded, prompts

    model = tiny_model(family)
    apply(model, mixed_profile(model))
    lengths = [7, 12, 3] if padded else [12, 12, 12]
    input_ids, attention_mask = left_padded(prompts(lengths, seed=4))
    checked_calls = []
    checked = backend._attention_or_stock_checked
    monkeypatch.setattr(backend, "_attention_or_stock_checked", lambda *a, **k: checked_calls.append(1) or checked(*a, **k))
    with torch.no_grad():  # the inline path
        inline = _prefill_and_two_steps(model, input_ids, attention_mask)
    assert checked_calls == []
    with torch.enable_grad():  # grad mode takes the checked path (through the op's autograd kernel)
        spelled_out = _prefill_and_two_steps(model, input_ids, attention_mask)
    assert len(checked_calls) == 3 * model.config.num_hidden_layers
    for a, b in zip(inline, spelled_out):
        assert b.requires_grad and torch.equal(a, b.detach())
    remove(model)


def test_the_inline_path_hands_what_it_does_not_handle_to_the_checked_path(monkeypatch):
    model = tiny_model("llama").eval()
    apply(model, mixed_profile(model))
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(ids).logits
    checked_calls = []
    checked = backend._attention_or_stock_checked
    monkeypatch.setattr(backend, "_attention_or_stock_checked", lambda *a, **k: checked_calls.append(sorted(k)) or checked(*a, **k))
    with torch.no_grad():  # an unknown keyword argument: refused by the checked path, not ignored
        with pytest.raises(NotImplementedError, match="does not know to be harmless"):
            model(ids, some_new_feature=torch.ones(1))
        assert len(checked_calls) == 1
        module = model.model.layers[0].self_attn  # a replaced buffer (module.to): the checked path re-reads it
        module._buffers[backend.LOG_GAMMA_BITS] = module._buffers[backend.LOG_GAMMA_BITS].clone()
        assert torch.equal(model(ids).logits, expected)
        assert len(checked_calls) == 2  # only the layer whose buffer changed; it cached the new view
        assert torch.equal(model(ids).logits, expected) and len(checked_calls) == 2
    remove(model)
