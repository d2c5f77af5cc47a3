"""The CUDA FlashAttention backend (zerotuning/vllm/cuda_backend.py), checked on the CPU build.

vLLM's CPU wheel ships the Python of its FlashAttention backend but no flash-attention kernels, so
here the kernel call is replaced by ``flash_paged_support.flash_attention``: plain causal paged
attention from the definition in float64, returning the output and the log-sum-exp as
``flash_attn_varlen_func(..., return_softmax_lse=True)`` does. The impl itself (its constructor,
its forward with vLLM's real metadata class, the cache views, the sink gathering and the
correction) runs as it would on CUDA, and its output is compared with float64 sink-biased
attention. What only a GPU can check (the real kernels' log-sum-exp, an engine) is in
scripts/gpu_check_vllm.sh.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig
from vllm.v1.attention.backend import AttentionCGSupport
from vllm.v1.attention.backends import flash_attn
from vllm.v1.attention.backends.registry import AttentionBackendEnum

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from flash_paged_support import expected_attention, flash_attention, paged_batch  # noqa: E402

import zerotuning.vllm as plugin  # noqa: E402
from zerotuning import ModelIdentity, Profile  # noqa: E402
from zerotuning.vllm import cuda_backend, gpu_guard, layer_gammas, worker  # noqa: E402
from zerotuning.vllm.layer_gammas import ServedProfile  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 6, 2, 16, 16
CONFIG = LlamaConfig(num_hidden_layers=3, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, hidden_size=HEADS * HEAD_DIM,
                     intermediate_size=64, vocab_size=100)
IDENTITY = ModelIdentity.of(SimpleNamespace(config=CONFIG))
GAMMAS = [4.0, 0.25, 1.0, 1e4, 1.7, 0.6]  # layer 1; layers 0 and 2 untouched


def tuned() -> Profile:
    rows = [[1.0] * HEADS, list(GAMMAS), [1.0] * HEADS]
    return Profile(IDENTITY, rows)


@pytest.fixture
def served(monkeypatch):
    profile = ServedProfile.create(tuned(), "'test.json'", CONFIG)
    monkeypatch.setattr(layer_gammas, "served_profile", lambda vllm_config: profile)
    monkeypatch.setattr(cuda_backend, "get_current_vllm_config", lambda: SimpleNamespace(speculative_config=None))
    monkeypatch.setattr(cuda_backend, "get_tensor_model_parallel_rank", lambda: 0)
    return profile


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(cuda_backend, "flash_attn_varlen_func", functools.partial(flash_attention, calls=calls))
    return calls


@pytest.fixture
def base_calls(monkeypatch):
    calls = []

    def stock_forward(self, layer, query, key, value, kv_cache, attn_metadata, output, *rest):
        calls.append(layer.layer_name)
        return output.fill_(-7.0)

    monkeypatch.setattr(flash_attn.FlashAttentionImpl, "forward", stock_forward)
    return calls


def make_impl(sliding_window=None, kv_cache_dtype="auto", softcap=None, fa_version=3):
    impl = cuda_backend.ZeroTuningFlashAttentionImpl(HEADS, HEAD_DIM, 0.3, KV_HEADS, None, sliding_window, kv_cache_dtype, logits_soft_cap=softcap)
    impl.vllm_flash_attn_version = fa_version  # no device here to detect it from
    return impl


def attention_layer(index):
    one = torch.ones(1)
    return SimpleNamespace(layer_name=f"model.layers.{index}.self_attn.attn", _q_scale=one, _k_scale=one, _v_scale=one)


def metadata_of(batch, padding=0, causal=True):
    qsl = batch.query_start_loc
    lengths = (qsl[1:] - qsl[:-1]).tolist()
    return flash_attn.FlashAttentionMetadata(
        num_actual_tokens=batch.num_tokens, max_query_len=max(lengths), query_start_loc=qsl,
        max_seq_len=int(batch.seq_lens.max()), seq_lens=batch.seq_lens, block_table=batch.block_table,
        slot_mapping=torch.zeros(batch.num_tokens + padding, dtype=torch.int64), causal=causal,
    )


def run(impl, layer_index, batch, padding=0, metadata=None):
    query = torch.cat([batch.query, torch.randn(padding, HEADS, HEAD_DIM).to(batch.query.dtype)])
    output = torch.full_like(query, 5.0)
    key = value = torch.zeros(query.shape[0], KV_HEADS, HEAD_DIM, dtype=query.dtype)
    impl.forward(attention_layer(layer_index), query, key, value, batch.kv_cache, metadata or metadata_of(batch, padding), output)
    return output


MIXED = [(23, 1), (50, 50), (61, 20), (8, 1), (2, 2), (1, 1)]  # decodes, whole and chunked prefills, a position-0 request


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("heads_outer", [True, False], ids=["HND", "NHD"])
def test_a_tuned_layer_gives_sink_biased_attention(served, kernel_calls, base_calls, dtype, softcap, heads_outer):
    batch = paged_batch(MIXED, HEADS, KV_HEADS, HEAD_DIM, BLOCK, dtype=dtype, seed=1, heads_outer=heads_outer, padded_requests=1)
    impl = make_impl(softcap=softcap)
    output = run(impl, 1, batch, padding=3)
    expected, _ = expected_attention(batch.per_request, torch.tensor([math.log(g) for g in GAMMAS]), 0.3, softcap)
    tolerance = 2e-5 if dtype == torch.float32 else 3e-2  # half precision: the kernel output's rounding, grown <= 4x
    torch.testing.assert_close(output[: batch.num_tokens].double(), expected, atol=tolerance, rtol=tolerance)
    assert torch.equal(output[batch.num_tokens :], torch.full((3, HEADS, HEAD_DIM), 5.0, dtype=dtype))  # padded rows untouched
    assert base_calls == []
    (call,) = kernel_calls
    assert call["return_softmax_lse"] is True and call["causal"] is True and call["window_size"] == [-1, -1]
    assert call["softmax_scale"] == 0.3 and call["softcap"] == (softcap or 0) and call["fa_version"] == 3
    assert call["alibi_slopes"] is None and call["s_aux"] is None


def test_untouched_layers_run_the_stock_forward_and_swaps_switch_paths(served, kernel_calls, base_calls):
    batch = paged_batch(MIXED, HEADS, KV_HEADS, HEAD_DIM, BLOCK, seed=2)
    impls = {index: make_impl() for index in range(3)}
    for index in (0, 2):
        assert torch.equal(run(impls[index], index, batch), torch.full_like(batch.query, -7.0))
    assert base_calls == ["model.layers.0.self_attn.attn", "model.layers.2.self_attn.attn"] and kernel_calls == []
    run(impls[1], 1, batch)
    assert len(kernel_calls) == 1

    # Swap: layer 2 tuned, layer 1 untouched, from the next forward on, on the same impls (no reload).
    rows = [[1.0] * HEADS, [1.0] * HEADS, [0.5] * HEADS]
    served.swap(Profile(IDENTITY, rows))
    assert torch.equal(run(impls[1], 1, batch), torch.full_like(batch.query, -7.0))
    expected, _ = expected_attention(batch.per_request, torch.full((HEADS,), math.log(0.5)), 0.3)
    torch.testing.assert_close(run(impls[2], 2, batch).double(), expected, atol=2e-5, rtol=2e-5)
    assert len(kernel_calls) == 2


def test_no_profile_runs_the_stock_forward_everywhere(monkeypatch, kernel_calls, base_calls):
    monkeypatch.setattr(layer_gammas, "served_profile", lambda vllm_config: None)
    monkeypatch.setattr(cuda_backend, "get_current_vllm_config", lambda: SimpleNamespace(speculative_config=None))
    batch = paged_batch([(9, 9)], HEADS, KV_HEADS, HEAD_DIM, BLOCK)
    run(make_impl(), 1, batch)
    assert base_calls == ["model.layers.1.self_attn.attn"] and kernel_calls == []


def test_layers_sharing_metadata_compute_the_sinks_once_per_block_table(served, kernel_calls, base_calls, monkeypatch):
    batch = paged_batch(MIXED, HEADS, KV_HEADS, HEAD_DIM, BLOCK, seed=4)
    metadata = metadata_of(batch)
    counted = []
    real = cuda_backend.token_sinks
    monkeypatch.setattr(cuda_backend, "token_sinks", lambda *args: counted.append(1) or real(*args))
    impl = make_impl()
    run(impl, 1, batch, metadata=metadata)
    run(make_impl(), 1, batch, metadata=metadata)
    assert len(counted) == 1
    # vLLM copies metadata with another block table for another KV-cache group: the sinks are recomputed.
    import copy

    other = copy.copy(metadata)
    other.block_table = metadata.block_table.clone()
    run(impl, 1, batch, metadata=other)
    assert len(counted) == 2


def test_refusals_name_the_profile_and_layer(served, kernel_calls, base_calls):
    batch = paged_batch([(9, 9)], HEADS, KV_HEADS, HEAD_DIM, BLOCK)
    with pytest.raises(ValueError, match=r"zerotuning profile 'test\.json', layer 1: a sliding-window layer"):
        run(make_impl(sliding_window=8), 1, batch)
    with pytest.raises(NotImplementedError, match=r"layer 1: non-causal or per-request causal attention"):
        run(make_impl(), 1, batch, metadata=metadata_of(batch, causal=False))
    with pytest.raises(NotImplementedError, match=r"layer 1: FlashAttention version None"):
        run(make_impl(fa_version=None), 1, batch)
    impl = make_impl()
    impl.alibi_slopes = torch.ones(HEADS)
    with pytest.raises(ValueError, match=r"layer 1: ALiBi slopes and learned attention sinks"):
        run(impl, 1, batch)
    metadata = metadata_of(batch)
    metadata.mm_prefix_query_range_tensor = torch.zeros(9, 2, dtype=torch.int32)
    with pytest.raises(NotImplementedError, match=r"layer 1: multimodal prefix masks and R-SWA"):
        run(make_impl(), 1, batch, metadata=metadata)
    with pytest.raises(NotImplementedError, match=r"layer 1: fused output quantization"):
        make_impl().forward(attention_layer(1), batch.query, None, None, batch.kv_cache, metadata_of(batch), torch.empty_like(batch.query), torch.ones(1))
    assert kernel_calls == []


def test_refused_at_start(served, monkeypatch):
    with pytest.raises(ValueError, match=r"zerotuning profile 'test\.json': kv_cache_dtype 'fp8' is quantised"):
        _init_with_kv_dtype("fp8")
    monkeypatch.setattr(cuda_backend, "get_current_vllm_config", lambda: SimpleNamespace(speculative_config=object()))
    with pytest.raises(NotImplementedError, match=r"zerotuning profile 'test\.json': speculative decoding"):
        make_impl()


def _init_with_kv_dtype(kv_cache_dtype):
    # FlashAttentionImpl refuses fp8 itself where the device cannot take it; the plugin refuses first with a profile.
    impl = object.__new__(cuda_backend.ZeroTuningFlashAttentionImpl)
    original = flash_attn.FlashAttentionImpl.__init__
    try:
        flash_attn.FlashAttentionImpl.__init__ = lambda self, *args, **kwargs: None
        impl.dcp_world_size = impl.pcp_world_size = 1
        cuda_backend.ZeroTuningFlashAttentionImpl.__init__(impl, HEADS, HEAD_DIM, 0.3, KV_HEADS, None, None, kv_cache_dtype)
    finally:
        flash_attn.FlashAttentionImpl.__init__ = original


def test_full_cuda_graphs_are_declined_while_a_profile_is_served(served, monkeypatch):
    builder = cuda_backend.ZeroTuningFlashAttentionBackend.get_builder_cls()
    assert issubclass(builder, flash_attn.FlashAttentionMetadataBuilder)
    assert builder.get_cudagraph_support(SimpleNamespace(), None) == AttentionCGSupport.NEVER
    monkeypatch.setattr(layer_gammas, "served_profile", lambda vllm_config: None)
    assert builder.get_cudagraph_support(SimpleNamespace(), None) == flash_attn.FlashAttentionMetadataBuilder.get_cudagraph_support(SimpleNamespace(), None)


def test_the_backend_keeps_flash_attentions_name_and_subclasses_it():
    backend = cuda_backend.ZeroTuningFlashAttentionBackend
    assert backend.get_name() == "FLASH_ATTN" and issubclass(backend, flash_attn.FlashAttentionBackend)
    assert issubclass(backend.get_impl_cls(), flash_attn.FlashAttentionImpl)
    assert backend.get_impl_cls().zerotuning_applies_gammas is True


@pytest.mark.skipif(hasattr(cuda_backend.fa_utils, "flash_attn_varlen_func"), reason="vLLM's CUDA build: the kernel is there")
def test_without_the_cuda_build_the_kernel_call_says_so():
    with pytest.raises(RuntimeError, match="flash_attn_varlen_func is not available here"):
        cuda_backend.flash_attn_varlen_func(q=None)


def test_on_cuda_flash_attn_is_replaced_and_the_other_gpu_backends_guarded(monkeypatch):
    from vllm.platforms import current_platform

    monkeypatch.setattr(type(current_platform), "is_cpu", lambda self: False)
    monkeypatch.setattr(type(current_platform), "is_cuda", lambda self: True)
    before = {member: member.is_overridden() and member.get_path() for member in AttentionBackendEnum}
    try:
        plugin.register()
        assert AttentionBackendEnum.FLASH_ATTN.get_path() == plugin.CUDA_BACKEND
        assert AttentionBackendEnum.FLASH_ATTN.get_class() is cuda_backend.ZeroTuningFlashAttentionBackend
        for name in gpu_guard.GUARDED_BACKENDS:
            if name != "FLASH_ATTN":
                assert AttentionBackendEnum[name].get_path() == gpu_guard.guard_path(name)
    finally:
        for member, path in before.items():
            member.clear_override()
            if path:
                from vllm.v1.attention.backends.registry import register_backend

                register_backend(member, path)


def test_a_swap_to_gammas_is_refused_where_a_layer_cannot_apply_them(monkeypatch):
    from vllm.model_executor.layers.attention import Attention

    def layer(impl):
        module = Attention.__new__(Attention)
        module.__dict__["impl"] = impl
        return module

    ours = object.__new__(cuda_backend.ZeroTuningFlashAttentionImpl)
    guarded = object.__new__(gpu_guard.Guarded_FLASH_ATTN.get_impl_cls())
    config = SimpleNamespace(compilation_config=SimpleNamespace(static_forward_context={"model.layers.0.attn": layer(ours)}))
    assert worker.layers_without_gammas(config) == []
    config.compilation_config.static_forward_context["model.layers.1.attn"] = layer(guarded)
    assert worker.layers_without_gammas(config) == ["model.layers.1.attn (Guarded_FLASH_ATTNImpl)"]
    assert worker.layers_without_gammas(SimpleNamespace(compilation_config=SimpleNamespace(static_forward_context={}))) != []
