"""The vLLM plugin's attention over a paged cache, against the float64 definition (no vLLM needed).

The cache is built by hand in the layout vLLM's CPU build writes (per block and KV head: keys
``[D, block]``, values ``[block, D]``), for batches mixing decode steps, whole prefills, chunked
prefills (earlier chunks already cached), a prefill longer than one query chunk and two requests
sharing their first block (prefix caching).
"""

import math

import pytest
import torch

from zerotuning.reference import sink_attention_reference
from zerotuning.vllm.paged_attention import QUERY_CHUNK, BatchPlan, cpu_block_views, sink_attention_paged


def build_batch(requests, kv_heads, heads, head_dim, block_size, *, shared_prefix=False, seed=0):
    """requests: (seq_len, query_len) pairs. Returns the packed query, cache, block table, plan and per-request K/V/Q."""
    gen = torch.Generator().manual_seed(seed)
    blocks_per_request = [-(-seq_len // block_size) for seq_len, _ in requests]
    total_blocks = sum(blocks_per_request) + 3
    order = torch.randperm(total_blocks, generator=gen).tolist()  # blocks scattered through the cache
    kv_cache = torch.randn(total_blocks, kv_heads, block_size, 2 * head_dim, generator=gen)  # garbage in unused slots
    keys, values = cpu_block_views(kv_cache)
    block_table = torch.zeros(len(requests), max(blocks_per_request) + 1, dtype=torch.int32)
    per_request, queries, starts = [], [], [0]
    first_k = first_v = None
    for r, (seq_len, query_len) in enumerate(requests):
        k = torch.randn(seq_len, kv_heads, head_dim, generator=gen)
        v = torch.randn(seq_len, kv_heads, head_dim, generator=gen)
        own = [order.pop() for _ in range(blocks_per_request[r])]
        if shared_prefix and r > 0:
            # Prefix caching: request r reuses request 0's first block, whose positions it shares.
            own[0] = int(block_table[0, 0])
            k[:block_size], v[:block_size] = first_k[:block_size], first_v[:block_size]
        block_table[r, : len(own)] = torch.tensor(own, dtype=torch.int32)
        for position in range(seq_len):
            block, slot = own[position // block_size], position % block_size
            keys[block, :, :, slot] = k[position]
            values[block, :, slot, :] = v[position]
        if r == 0:
            first_k, first_v = k, v
        q = torch.randn(query_len, heads, head_dim, generator=gen)
        per_request.append((k, v, q))
        queries.append(q)
        starts.append(starts[-1] + query_len)
    query = torch.cat(queries)
    seq_lens = torch.tensor([seq_len for seq_len, _ in requests], dtype=torch.int32)
    plan = BatchPlan.of(torch.tensor(starts, dtype=torch.int32), seq_lens, block_size, query.shape[0])
    return query, keys, values, block_table, plan, per_request


def expected_output(per_request, log_gamma, scale, softcap):
    outs = []
    for k, v, q in per_request:
        out, _ = sink_attention_reference(
            q.permute(1, 0, 2)[None], k.permute(1, 0, 2)[None], v.permute(1, 0, 2)[None], log_gamma,
            is_causal=True, scale=scale, softcap=softcap,
        )
        outs.append(out[0].permute(1, 0, 2))
    return torch.cat(outs)


CASES = {
    "decode batch": [(5, 1), (17, 1), (64, 1), (1, 1)],
    "whole prefills": [(9, 9), (33, 33)],
    "chunked prefill": [(40, 12), (70, 3)],
    "mixed": [(23, 1), (50, 50), (61, 20), (8, 1), (2, 2)],
    "longer than a query chunk": [(QUERY_CHUNK + 37, QUERY_CHUNK + 37), (12, 1)],
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (6, 2), (3, 1)])
@pytest.mark.parametrize("block_size", [16, 32])
def test_paged_attention_matches_the_float64_definition(case, heads, kv_heads, block_size):
    head_dim = 8
    query, keys, values, block_table, plan, per_request = build_batch(CASES[case], kv_heads, heads, head_dim, block_size)
    log_gamma = torch.linspace(-1.5, 1.2, heads)  # gamma from 0.22 to 3.3, one head near 1
    scale = 1 / math.sqrt(head_dim)
    output = torch.full_like(query, float("nan"))
    sink_attention_paged(query, keys, values, block_table, plan, log_gamma, scale, output)
    torch.testing.assert_close(output.double(), expected_output(per_request, log_gamma, scale, None), atol=2e-5, rtol=2e-5)


def test_softcap_is_applied_before_the_sink_bias():
    query, keys, values, block_table, plan, per_request = build_batch(CASES["mixed"], 2, 4, 16, 16, seed=3)
    log_gamma = torch.tensor([0.7, -0.4, 1.1, 0.0])
    output = torch.empty_like(query)
    sink_attention_paged(query * 6, keys, values, block_table, plan, log_gamma, 0.25, output, softcap=5.0)
    scaled = [(k, v, q * 6) for k, v, q in per_request]
    torch.testing.assert_close(output.double(), expected_output(scaled, log_gamma, 0.25, 5.0), atol=2e-5, rtol=2e-5)


def test_prefix_cached_requests_share_their_first_block_and_sink():
    requests = [(40, 40), (36, 4), (20, 1)]
    query, keys, values, block_table, plan, per_request = build_batch(requests, 2, 4, 8, 16, shared_prefix=True, seed=5)
    assert len(set(block_table[:, 0].tolist())) == 1
    log_gamma = torch.tensor([1.0, -1.0, 0.5, 2.0])
    output = torch.empty_like(query)
    sink_attention_paged(query, keys, values, block_table, plan, log_gamma, 0.3, output)
    torch.testing.assert_close(output.double(), expected_output(per_request, log_gamma, 0.3, None), atol=2e-5, rtol=2e-5)


def test_zero_log_gamma_is_plain_causal_attention():
    query, keys, values, block_table, plan, per_request = build_batch(CASES["mixed"], 2, 6, 8, 16, seed=7)
    output = torch.empty_like(query)
    sink_attention_paged(query, keys, values, block_table, plan, torch.zeros(6), 0.35, output)
    plain = []
    for k, v, q in per_request:
        kk = k.repeat_interleave(3, dim=1).permute(1, 0, 2).double()
        vv = v.repeat_interleave(3, dim=1).permute(1, 0, 2).double()
        qq = q.permute(1, 0, 2).double()
        causal = torch.ones(q.shape[0], k.shape[0], dtype=torch.bool).tril(k.shape[0] - q.shape[0])
        plain.append(torch.nn.functional.scaled_dot_product_attention(qq, kk, vv, attn_mask=causal, scale=0.35).permute(1, 0, 2))
    torch.testing.assert_close(output.double(), torch.cat(plain), atol=2e-5, rtol=2e-5)


def test_padded_tokens_beyond_the_actual_ones_are_left_alone():
    # vLLM pads the packed batch (CUDA graphs, chunking): tokens past num_actual_tokens belong to no request.
    query, keys, values, block_table, _, per_request = build_batch([(10, 1), (7, 1)], 1, 2, 8, 16)
    padded = torch.cat([query, torch.randn(3, 2, 8)])
    plan = BatchPlan.of(torch.tensor([0, 1, 2], dtype=torch.int32), torch.tensor([10, 7], dtype=torch.int32), 16, 2)
    output = torch.full_like(padded, 7.0)
    sink_attention_paged(padded, keys, values, block_table, plan, torch.tensor([0.5, -0.5]), 0.4, output)
    assert torch.equal(output[2:], torch.full((3, 2, 8), 7.0))
    torch.testing.assert_close(output[:2].double(), expected_output(per_request, torch.tensor([0.5, -0.5]), 0.4, None), atol=2e-5, rtol=2e-5)


def test_block_views_are_views_of_the_cache():
    kv_cache = torch.zeros(3, 2, 16, 16)
    keys, values = cpu_block_views(kv_cache)
    assert keys.shape == (3, 2, 8, 16) and values.shape == (3, 2, 16, 8)
    keys[1, 0, 2, 5] = 1.0
    values[2, 1, 4, 3] = 2.0
    assert kv_cache[1, 0].flatten()[2 * 16 + 5] == 1.0  # keys: first half, transposed [D, block]
    assert kv_cache[2, 1].flatten()[8 * 16 + 4 * 8 + 3] == 2.0  # values: second half, [block, D]
