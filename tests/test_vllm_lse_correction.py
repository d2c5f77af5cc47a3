"""The vLLM plugin's post-hoc sink correction (zerotuning/vllm/lse_correction.py) against float64 sink attention.

Plain causal attention (what FlashAttention computes: output and log-sum-exp) is taken from the
float64 reference with every gamma 1, rounded to the kernel's output dtype, and corrected; the
result is compared with the float64 reference of sink-biased attention. Batches are packed the way
vLLM packs them (varlen: requests of different cached and new lengths one after another), with
grouped-query attention, softcapping and gammas 0, 0.25, 1, 4 and 1e4.

The correction divides by ``1 + (gamma - 1) p`` (p: the sink's weight): for gamma < 1 the rounding
already in the kernel's output grows by that factor, so tolerances are scaled per query by it
(``condition``), as docs/vllm.md says.
"""

from __future__ import annotations

import math

import pytest
import torch

from flash_paged_support import expected_attention, flash_attention, paged_batch

from zerotuning.vllm.lse_correction import correct_with_sink, gather_sinks, sink_correction, sink_logits, token_sinks

GAMMAS = (0.0, 0.25, 1.0, 4.0, 1e4)


def log_of(gamma: float) -> float:
    return -math.inf if gamma == 0 else math.log(gamma)


def packed_batch(requests, heads, kv_heads, head_dim, *, seed, logit_scale=1.0):
    """requests: (seq_len, query_len); the queries are each request's last query_len positions."""
    gen = torch.Generator().manual_seed(seed)
    per_request = []
    for seq_len, query_len in requests:
        k = torch.randn(seq_len, kv_heads, head_dim, generator=gen, dtype=torch.float64) * logit_scale
        v = torch.randn(seq_len, kv_heads, head_dim, generator=gen, dtype=torch.float64)
        q = torch.randn(query_len, heads, head_dim, generator=gen, dtype=torch.float64) * logit_scale
        per_request.append((k, v, q))
    return per_request


def inputs_of(per_request, heads, kv_heads):
    """What the backend hands the correction: queries, per-request sinks, token -> request, position-0 queries."""
    query = torch.cat([q for _, _, q in per_request])
    sink_keys = torch.stack([k[0] for k, _, _ in per_request])
    sink_values = torch.stack([v[0] for _, v, _ in per_request])
    token_request = torch.cat([torch.full((q.shape[0],), r, dtype=torch.long) for r, (_, _, q) in enumerate(per_request)])
    only_sink = torch.cat([torch.arange(k.shape[0] - q.shape[0], k.shape[0]) == 0 for k, _, q in per_request])
    return query, sink_keys, sink_values, token_request, only_sink


def condition(per_request, log_gamma, scale, softcap, heads, kv_heads):
    """[T, H]: 1 / (1 + (gamma - 1) p), the factor by which the correction can grow the input's rounding."""
    plain_out, plain_lse = expected_attention(per_request, torch.zeros(heads), scale, softcap)
    query, keys, values, token_request, only = inputs_of(per_request, heads, kv_heads)
    s0 = sink_logits(query.double(), keys[token_request].double(), scale, softcap or 0.0).double()
    p = torch.exp(s0 - plain_lse.t())
    gamma = torch.exp(log_gamma.double())
    denominator = 1 + (gamma - 1) * p
    factor = 1 / denominator.clamp(min=1e-300)
    return torch.where(only[:, None], torch.ones_like(factor), factor)


SHAPES = {
    "one prefill": ([(12, 12)], 4, 4, 16),
    "varlen prefills, GQA 2": ([(9, 9), (33, 33), (2, 2)], 4, 2, 8),
    "decode batch, GQA 3": ([(5, 1), (17, 1), (64, 1), (1, 1)], 6, 2, 16),
    "chunked and mixed, MQA": ([(40, 12), (70, 3), (23, 1), (50, 50), (8, 1)], 3, 1, 32),
    "head dim 64, GQA 4": ([(31, 31), (100, 7), (3, 1)], 8, 2, 64),
}


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("softcap", [None, 4.0])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_correction_of_plain_attention_gives_sink_biased_attention(shape, softcap, gamma):
    requests, heads, kv_heads, head_dim = SHAPES[shape]
    per_request = packed_batch(requests, heads, kv_heads, head_dim, seed=len(shape) + int(gamma * 7) % 13, logit_scale=1.5)
    scale = 1 / math.sqrt(head_dim)
    # gamma on every other head, the other heads untouched (gamma 1)
    log_gamma = torch.tensor([log_of(gamma) if h % 2 == 0 else 0.0 for h in range(heads)])
    plain_out, plain_lse = expected_attention(per_request, torch.zeros(heads), scale, softcap)
    expected_out, expected_lse = expected_attention(per_request, log_gamma, scale, softcap)
    query, keys, values, token_request, only = inputs_of(per_request, heads, kv_heads)

    out = plain_out.float()  # the kernel's output in float32, its log-sum-exp in float32
    got, got_lse = correct_with_sink(
        out, plain_lse.float(), sink_logits(query.float(), keys[token_request].float(), scale, softcap or 0.0),
        values[token_request].float(), log_gamma, only, return_lse=True,
    )
    assert got.dtype == torch.float32 and got.shape == out.shape
    bound = condition(per_request, log_gamma, scale, softcap, heads, kv_heads)[..., None]  # [T, H, 1]
    error = (got.double() - expected_out).abs()
    assert torch.all(error <= 2e-6 * bound + 2e-6), f"max error {error.max():.3g}, max condition {bound.max():.3g}"
    assert torch.equal(got[:, 1::2], out[:, 1::2])  # untouched heads: the kernel's output bit for bit
    finite = torch.isfinite(expected_lse)
    assert torch.equal(finite, torch.isfinite(got_lse))
    lse_error = (got_lse.double() - expected_lse).abs().t()[finite.t()]  # log(1 + (gamma - 1) p): the same condition
    assert torch.all(lse_error <= (2e-6 * bound[..., 0] + 2e-6)[finite.t()] * (1 + expected_lse.abs().t()[finite.t()]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("gamma", [0.25, 4.0, 1e4])
def test_model_dtype_in_and_out(dtype, gamma):
    requests, heads, kv_heads, head_dim = SHAPES["chunked and mixed, MQA"]
    per_request = packed_batch(requests, heads, kv_heads, head_dim, seed=11)
    scale = 1 / math.sqrt(head_dim)
    log_gamma = torch.full((heads,), log_of(gamma))
    plain_out, plain_lse = expected_attention(per_request, torch.zeros(heads), scale, None)
    expected, _ = expected_attention(per_request, log_gamma, scale, None)
    query, keys, values, token_request, only = inputs_of(per_request, heads, kv_heads)
    got = sink_correction(
        plain_out.to(dtype), plain_lse.float(), query.to(dtype), keys.to(dtype), values.to(dtype), token_request, log_gamma, scale,
        sees_only_sink=only,
    )
    assert got.dtype == dtype
    # the rounding of q, k_0, v_0 and of the result itself is not shrunk when the condition is below 1
    bound = condition(per_request, log_gamma, scale, None, heads, kv_heads)[..., None].clamp(min=1.0)
    unit = torch.finfo(dtype).eps
    error = (got.double() - expected).abs()
    assert torch.all(error <= 4 * unit * bound * (1 + expected.abs())), f"max error {error.max():.3g}"


def test_position_zero_sees_only_the_sink():
    # The first query of a request sees key 0 alone: v_0 for any gamma > 0, zeros for gamma 0.
    per_request = packed_batch([(3, 3)], 2, 1, 8, seed=2)
    plain_out, plain_lse = expected_attention(per_request, torch.zeros(2), 0.3, None)
    query, keys, values, token_request, only = inputs_of(per_request, 2, 1)
    assert only.tolist() == [True, False, False]
    log_gamma = torch.tensor([-math.inf, math.log(3.0)])
    got = sink_correction(plain_out.float(), plain_lse.float(), query.float(), keys.float(), values.float(), token_request, log_gamma, 0.3, sees_only_sink=only)
    assert torch.equal(got[0, 0], torch.zeros(8))
    assert torch.equal(got[0, 1], plain_out[0, 1].float())
    expected, _ = expected_attention(per_request, log_gamma, 0.3, None)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_large_gamma_does_not_overflow():
    per_request = packed_batch([(20, 20), (9, 1)], 2, 2, 8, seed=4)
    plain_out, plain_lse = expected_attention(per_request, torch.zeros(2), 0.35, None)
    query, keys, values, token_request, only = inputs_of(per_request, 2, 2)
    for gamma in (1e4, 1e30):
        log_gamma = torch.full((2,), math.log(gamma))
        got = sink_correction(plain_out.float(), plain_lse.float(), query.float(), keys.float(), values.float(), token_request, log_gamma, 0.35, sees_only_sink=only)
        assert torch.isfinite(got).all()
        expected, _ = expected_attention(per_request, log_gamma, 0.35, None)
        torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=2e-5)
    # gamma 1e30 makes the sink take all the weight: every query's output is its request's v_0
    torch.testing.assert_close(got, values[token_request].float(), atol=1e-6, rtol=0)


def test_zero_log_gamma_returns_the_input_unchanged():
    per_request = packed_batch([(7, 7), (13, 2)], 4, 2, 8, seed=6)
    plain_out, plain_lse = expected_attention(per_request, torch.zeros(4), 0.4, None)
    query, keys, values, token_request, only = inputs_of(per_request, 4, 2)
    out = plain_out.to(torch.bfloat16)
    got = sink_correction(out, plain_lse.float(), query.float(), keys.float(), values.float(), token_request, torch.zeros(4), 0.4, sees_only_sink=only)
    assert torch.equal(got, out)


def test_bad_arguments_are_named():
    out = torch.zeros(5, 4, 8)
    lse = torch.zeros(4, 5)
    s0 = torch.zeros(5, 4)
    v0 = torch.zeros(5, 2, 8)
    g = torch.zeros(4)
    with pytest.raises(ValueError, match=r"lse: expected \[heads, tokens\] = \[4, 5\]"):
        correct_with_sink(out, lse.t(), s0, v0, g)
    with pytest.raises(ValueError, match=r"sink_logit: expected \[5, 4\]"):
        correct_with_sink(out, lse, s0.t(), v0, g)
    with pytest.raises(ValueError, match=r"sink_value: expected \[5, kv_heads dividing 4, 8\]"):
        correct_with_sink(out, lse, s0, torch.zeros(5, 3, 8), g)
    with pytest.raises(ValueError, match=r"log_gamma: expected \[4\]"):
        correct_with_sink(out, lse, s0, v0, torch.zeros(2))
    with pytest.raises(ValueError, match=r"sees_only_sink: expected a bool tensor \[5\]"):
        correct_with_sink(out, lse, s0, v0, g, torch.zeros(5))
    with pytest.raises(ValueError, match=r"out: expected 3 dimensions"):
        correct_with_sink(out[0], lse, s0, v0, g)
    with pytest.raises(ValueError, match=r"sink_key: its 3 KV heads do not divide the query's 4 heads"):
        sink_logits(out, torch.zeros(5, 3, 8), 1.0)
    with pytest.raises(ValueError, match=r"token_request: expected \[5\]"):
        sink_correction(out, lse, out, v0[:2], v0[:2], torch.zeros(4, dtype=torch.long), g, 1.0)


PAGED = {
    "decode batch": [(5, 1), (17, 1), (64, 1), (1, 1)],
    "prefills from position 0": [(9, 9), (33, 33), (1, 1)],
    "chunked prefill": [(40, 12), (70, 3), (16, 16)],
    "mixed": [(23, 1), (50, 50), (61, 20), (8, 1), (2, 2)],
}


@pytest.mark.parametrize("case", list(PAGED))
@pytest.mark.parametrize("heads_outer", [True, False], ids=["HND", "NHD"])
@pytest.mark.parametrize("padded", [0, 2])
def test_token_sinks_point_at_each_requests_position_zero(case, heads_outer, padded):
    batch = paged_batch(PAGED[case], 4, 2, 8, 16, seed=3, heads_outer=heads_outer, padded_requests=padded)
    sinks = token_sinks(batch.query_start_loc, batch.seq_lens, batch.block_table, batch.num_tokens)
    keys, values = gather_sinks(*batch.cache_views(), sinks.blocks)
    _, _, _, token_request, only = inputs_of(batch.per_request, 4, 2)
    expected_k = torch.stack([k[0] for k, _, _ in batch.per_request])[token_request]
    expected_v = torch.stack([v[0] for _, v, _ in batch.per_request])[token_request]
    assert torch.equal(keys.double(), expected_k) and torch.equal(values.double(), expected_v)
    assert torch.equal(sinks.sees_only_sink, only)
    assert sinks.blocks.dtype == torch.int64 and sinks.blocks.shape == (batch.num_tokens,)


def test_token_sinks_with_a_shared_first_block_and_padded_tokens():
    # Prefix caching: every request's block table starts with request 0's block; tokens past the actual ones are not asked for.
    batch = paged_batch([(40, 40), (36, 4), (20, 1)], 4, 2, 8, 16, seed=5, shared_first_block=True)
    assert len(set(batch.block_table[:3, 0].tolist())) == 1
    sinks = token_sinks(batch.query_start_loc, batch.seq_lens, batch.block_table, 44)
    assert sinks.blocks.tolist() == [int(batch.block_table[0, 0])] * 44
    assert sinks.sees_only_sink.tolist() == [True] + [False] * 43


@pytest.mark.parametrize("case", list(PAGED))
@pytest.mark.parametrize("softcap", [0.0, 5.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_correction_over_a_paged_cache_gives_sink_biased_attention(case, softcap, dtype):
    # The backend's step: plain paged attention with its log-sum-exp, the sinks gathered from the cache, the correction.
    heads, kv_heads, head_dim = 6, 2, 16
    batch = paged_batch(PAGED[case], heads, kv_heads, head_dim, 16, dtype=dtype, seed=8, heads_outer=(dtype == torch.float32))
    scale = 0.3
    log_gamma = torch.tensor([math.log(4.0), math.log(0.25), 0.0, math.log(1e4), math.log(1.7), math.log(0.6)])
    key_cache, value_cache = batch.cache_views()
    out = torch.empty_like(batch.query)
    _, lse = flash_attention(q=batch.query, k=key_cache, v=value_cache, out=out, cu_seqlens_q=batch.query_start_loc, max_seqlen_q=0,
                             seqused_k=batch.seq_lens, max_seqlen_k=0, softmax_scale=scale, causal=True, block_table=batch.block_table,
                             softcap=softcap, return_softmax_lse=True)
    sinks = token_sinks(batch.query_start_loc, batch.seq_lens, batch.block_table, batch.num_tokens)
    k0, v0 = gather_sinks(key_cache, value_cache, sinks.blocks)
    got = correct_with_sink(out, lse, sink_logits(batch.query, k0, scale, softcap), v0, log_gamma, sinks.sees_only_sink)
    assert got.dtype == dtype
    expected, _ = expected_attention(batch.per_request, log_gamma, scale, softcap or None)
    tolerance = 2e-5 if dtype == torch.float32 else 3e-2  # bf16: the output's own rounding, grown at most 4x (gamma 0.25)
    torch.testing.assert_close(got.double(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_matches_the_cpu_correction():
    requests, heads, kv_heads, head_dim = SHAPES["head dim 64, GQA 4"]
    per_request = packed_batch(requests, heads, kv_heads, head_dim, seed=9)
    scale = 1 / math.sqrt(head_dim)
    log_gamma = torch.linspace(-1.4, 2.0, heads)
    plain_out, plain_lse = expected_attention(per_request, torch.zeros(heads), scale, None)
    query, keys, values, token_request, only = inputs_of(per_request, heads, kv_heads)
    args = (plain_out.bfloat16(), plain_lse.float(), query.bfloat16(), keys.bfloat16(), values.bfloat16(), token_request, log_gamma)
    cpu = sink_correction(*args, scale, sees_only_sink=only)
    gpu = sink_correction(*(a.cuda() for a in args), scale, sees_only_sink=only.cuda())
    torch.testing.assert_close(gpu.cpu().float(), cpu.float(), atol=1e-2, rtol=1e-2)


def test_sink_logits_of_a_strided_query():
    # vLLM hands the attention a query that is a column slice of the fused qkv projection.
    gen = torch.Generator().manual_seed(12)
    qkv = torch.randn(7, (6 + 2 * 2) * 8, generator=gen)
    query = qkv[:, : 6 * 8].view(7, 6, 8)
    assert not query.is_contiguous()
    key = torch.randn(7, 2, 8, generator=gen)
    expected = torch.einsum("thd,thd->th", query.double(), key.double().repeat_interleave(3, dim=1)) * 0.5
    torch.testing.assert_close(sink_logits(query, key, 0.5).double(), expected, atol=1e-6, rtol=1e-6)
