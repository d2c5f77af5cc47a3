"""torch.ops.zerotuning.sink_attention_paged (the vLLM plugin's attention) against the float64 definition.

The cache is built by hand in the layout vLLM's CPU build writes, ``kv_cache [num_blocks,
kv_heads, block_size, 2 * head_dim]`` with, per block and KV head, the keys transposed ``[D,
block]`` and then the values ``[block, D]``; blocks are scattered through it and its unused slots
hold garbage (NaN included, which must never be read). Batches mix decode steps, whole prefills,
chunked prefills (earlier chunks already cached), requests longer than one key tile or query
block, requests with no query this step, and requests sharing their first block (prefix caching).
"""

import math

import pytest
import torch

import zerotuning.ops  # noqa: F401  (registers torch.ops.zerotuning)
from zerotuning.reference import sink_attention_reference

OP = torch.ops.zerotuning.sink_attention_paged


def build_batch(requests, heads, kv_heads, head_dim, block_size, *, dtype=torch.float32, shared_prefix=False, seed=0):
    """requests: (seq_len, query_len) pairs. Returns (query, kv_cache, block_table, query_start_loc, seq_lens, per_request)."""
    gen = torch.Generator().manual_seed(seed)
    blocks_per_request = [-(-seq_len // block_size) for seq_len, _ in requests]
    total_blocks = sum(blocks_per_request) + 3
    order = torch.randperm(total_blocks, generator=gen).tolist()  # blocks scattered through the cache
    kv_cache = torch.randn(total_blocks, kv_heads, block_size, 2 * head_dim, generator=gen)
    kv_cache.view(-1)[torch.rand(kv_cache.numel(), generator=gen) < 0.05] = math.nan  # garbage, overwritten where used
    kv_cache = kv_cache.to(dtype)
    slabs = kv_cache.view(total_blocks, kv_heads, 2, block_size * head_dim)
    keys = slabs[:, :, 0].unflatten(-1, (head_dim, block_size))
    values = slabs[:, :, 1].unflatten(-1, (block_size, head_dim))
    block_table = torch.full((len(requests), max(blocks_per_request, default=0) + 2), -1, dtype=torch.int32)
    per_request, queries, starts = [], [], [0]
    first_k = first_v = None
    for r, (seq_len, query_len) in enumerate(requests):
        k = torch.randn(seq_len, kv_heads, head_dim, generator=gen).to(dtype)
        v = torch.randn(seq_len, kv_heads, head_dim, generator=gen).to(dtype)
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
        q = torch.randn(query_len, heads, head_dim, generator=gen).to(dtype)
        per_request.append((k, v, q))
        queries.append(q)
        starts.append(starts[-1] + query_len)
    query = torch.cat(queries)
    seq_lens = torch.tensor([seq_len for seq_len, _ in requests], dtype=torch.int32)
    return query, kv_cache, block_table, torch.tensor(starts, dtype=torch.int32), seq_lens, per_request


def expected_output(per_request, log_gamma, scale, softcap):
    """float64, per request: causal attention of its queries (the last of its positions) over its keys."""
    outs = []
    for k, v, q in per_request:
        if q.shape[0] == 0:
            continue
        out, _ = sink_attention_reference(
            q.permute(1, 0, 2)[None], k.permute(1, 0, 2)[None], v.permute(1, 0, 2)[None], log_gamma,
            is_causal=True, scale=scale, softcap=softcap or None,
        )
        outs.append(out[0].permute(1, 0, 2))
    return torch.cat(outs)


def run(query, kv_cache, block_table, starts, seq_lens, log_gamma, scale, softcap=0.0):
    output = torch.full_like(query, math.nan)
    OP(query, kv_cache, block_table, starts, seq_lens, log_gamma, scale, softcap, output)
    return output


TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def assert_matches(output, expected):
    tol = TOLERANCE[output.dtype]
    torch.testing.assert_close(output.double(), expected.to(output.dtype).double(), atol=tol, rtol=tol)


CASES = {
    "decode batch": [(5, 1), (17, 1), (64, 1), (1, 1), (130, 1)],
    "whole prefills": [(9, 9), (33, 33), (1, 1)],
    "chunked prefill": [(40, 12), (70, 3), (150, 64)],
    "mixed": [(23, 1), (50, 50), (61, 20), (8, 1), (2, 2)],
    "idle requests": [(30, 0), (12, 1), (44, 0), (9, 9)],
    "beyond one key tile and query block": [(700, 90), (12, 1)],
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (6, 2), (9, 3), (3, 1)])
@pytest.mark.parametrize("block_size", [16, 128, 5])
def test_matches_the_float64_definition(case, heads, kv_heads, block_size):
    head_dim = 16
    query, kv_cache, table, starts, lens, per_request = build_batch(CASES[case], heads, kv_heads, head_dim, block_size)
    log_gamma = torch.linspace(-1.5, 1.2, heads)  # gamma from 0.22 to 3.3
    scale = 1 / math.sqrt(head_dim)
    output = run(query, kv_cache, table, starts, lens, log_gamma, scale)
    assert_matches(output, expected_output(per_request, log_gamma, scale, 0.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [64, 20, 1])
@pytest.mark.parametrize("softcap", [0.0, 5.0])
def test_dtypes_head_dims_and_softcap(dtype, head_dim, softcap):
    query, kv_cache, table, starts, lens, per_request = build_batch(CASES["mixed"], 6, 2, head_dim, 32, dtype=dtype, seed=3)
    query = (query.float() * 4).to(dtype)  # large enough logits for the cap to matter
    per_request = [(k, v, (q.float() * 4).to(dtype)) for k, v, q in per_request]
    log_gamma = torch.tensor([0.7, -0.4, 1.1, 0.0, -2.0, 0.3])
    scale = 1 / math.sqrt(head_dim)
    output = run(query, kv_cache, table, starts, lens, log_gamma, scale, softcap)
    assert output.dtype == dtype
    assert_matches(output, expected_output(per_request, log_gamma, scale, softcap))


@pytest.mark.parametrize(
    "log_gamma",
    [
        pytest.param(torch.full((4,), -math.inf), id="gamma 0"),
        pytest.param(torch.full((4,), 60.0), id="gamma e^60"),
        pytest.param(torch.zeros(4), id="gamma 1"),
        pytest.param(torch.tensor([-math.inf, 40.0, 0.0, -0.8]), id="mixed"),
    ],
)
def test_extreme_gammas(log_gamma):
    # Includes queries at position 0, which see only the sink: with gamma 0 they see nothing (zeros).
    query, kv_cache, table, starts, lens, per_request = build_batch(CASES["mixed"], 4, 2, 16, 16, seed=4)
    output = run(query, kv_cache, table, starts, lens, log_gamma, 0.25)
    assert_matches(output, expected_output(per_request, log_gamma, 0.25, 0.0))
    if torch.isinf(log_gamma).all():
        assert torch.equal(output[starts[1]], torch.zeros(4, 16))  # request 1's first query is position 0


def test_zero_log_gamma_is_plain_causal_attention():
    query, kv_cache, table, starts, lens, per_request = build_batch(CASES["mixed"], 6, 2, 8, 16, seed=7)
    output = run(query, kv_cache, table, starts, lens, torch.zeros(6), 0.35)
    plain = []
    for k, v, q in per_request:
        kk, vv = (x.repeat_interleave(3, dim=1).permute(1, 0, 2).double() for x in (k, v))
        causal = torch.ones(q.shape[0], k.shape[0], dtype=torch.bool).tril(k.shape[0] - q.shape[0])
        plain.append(torch.nn.functional.scaled_dot_product_attention(q.permute(1, 0, 2).double(), kk, vv, attn_mask=causal, scale=0.35).permute(1, 0, 2))
    torch.testing.assert_close(output.double(), torch.cat(plain), atol=2e-5, rtol=2e-5)


def test_prefix_cached_requests_share_their_first_block_and_sink():
    requests = [(40, 40), (36, 4), (20, 1), (16, 1)]
    query, kv_cache, table, starts, lens, per_request = build_batch(requests, 4, 2, 8, 16, shared_prefix=True, seed=5)
    assert len(set(table[:, 0].tolist())) == 1
    log_gamma = torch.tensor([1.0, -1.0, 0.5, 2.0])
    output = run(query, kv_cache, table, starts, lens, log_gamma, 0.3)
    assert_matches(output, expected_output(per_request, log_gamma, 0.3, 0.0))


@pytest.mark.parametrize("seed", range(6))
def test_random_batches(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    heads, kv_heads = [(4, 4), (6, 2), (9, 3), (8, 1)][seed % 4]
    block_size = [16, 32, 7, 64, 1, 128][seed]
    head_dim = [8, 32, 64, 24, 16, 64][seed]
    requests = []
    for _ in range(int(torch.randint(1, 9, (1,), generator=gen))):
        seq_len = int(torch.randint(1, 300, (1,), generator=gen))
        kind = int(torch.randint(0, 3, (1,), generator=gen))
        query_len = [1, seq_len, int(torch.randint(0, seq_len + 1, (1,), generator=gen))][kind]
        requests.append((seq_len, query_len))
    query, kv_cache, table, starts, lens, per_request = build_batch(requests, heads, kv_heads, head_dim, block_size, seed=seed)
    log_gamma = torch.randn(heads, generator=gen)
    softcap = [0.0, 30.0][seed % 2]
    output = run(query, kv_cache, table, starts, lens, log_gamma, 1 / math.sqrt(head_dim), softcap)
    if query.shape[0]:
        assert_matches(output, expected_output(per_request, log_gamma, 1 / math.sqrt(head_dim), softcap))


def test_strided_query_and_output_and_padded_tokens():
    # vLLM's query is a view into the fused qkv projection; tokens past the last request are padding.
    query, kv_cache, table, starts, lens, per_request = build_batch([(10, 1), (30, 6)], 4, 2, 8, 16, seed=9)
    tokens = query.shape[0]
    qkv = torch.randn(tokens + 3, 4 * 8 + 2 * 2 * 8)
    qkv[:tokens, : 4 * 8] = query.flatten(1)
    strided_query = qkv[:, : 4 * 8].unflatten(1, (4, 8))
    wide = torch.full((tokens + 3, 4, 12), 7.0)
    output = wide[..., :8]
    log_gamma = torch.tensor([0.5, -0.5, 1.0, 0.0])
    OP(strided_query, kv_cache, table, starts, lens, log_gamma, 0.4, 0.0, output)
    assert torch.equal(wide[tokens:], torch.full((3, 4, 12), 7.0)) and torch.equal(wide[..., 8:], torch.full((tokens + 3, 4, 4), 7.0))
    assert_matches(output[:tokens], expected_output(per_request, log_gamma, 0.4, 0.0))


def test_non_finite_queries_poison_only_their_row():
    query, kv_cache, table, starts, lens, per_request = build_batch([(12, 1), (20, 3)], 2, 1, 8, 16, seed=11)
    query[1, 0, 3] = math.nan
    output = run(query, kv_cache, table, starts, lens, torch.tensor([0.2, 0.3]), 0.35)
    assert torch.isnan(output[1, 0]).all()
    finite = torch.ones(query.shape[:2], dtype=torch.bool)
    finite[1, 0] = False
    assert torch.isfinite(output[finite]).all()


def good_arguments():
    query, kv_cache, table, starts, lens, _ = build_batch([(20, 1), (9, 9)], 4, 2, 8, 16)
    return dict(
        query=query, kv_cache=kv_cache, block_table=table, query_start_loc=starts, seq_lens=lens,
        log_gamma=torch.zeros(4), scale=0.3, softcap=0.0, output=torch.empty_like(query),
    )


def call(**changes):
    arguments = good_arguments()
    arguments.update({name: change(arguments) if callable(change) else change for name, change in changes.items()})
    OP(*arguments.values())


BAD_INPUTS = {
    "query 2-D": (dict(query=lambda a: a["query"].flatten(1)), "query must be a 3-D tensor"),
    "query int": (dict(query=lambda a: a["query"].long()), "query must be float32, float16 or bfloat16"),
    "query strided head_dim": (dict(query=lambda a: a["query"].transpose(1, 2).contiguous().transpose(1, 2)), "query must be contiguous along head_dim"),
    "output shape": (dict(output=lambda a: a["output"][:-1]), "output must have the shape of query"),
    "output dtype": (dict(output=lambda a: a["output"].double()), "output must have query's dtype"),
    "cache dtype": (dict(kv_cache=lambda a: a["kv_cache"].half()), "kv_cache must have query's dtype"),
    "cache last dim": (dict(kv_cache=lambda a: a["kv_cache"][..., :8]), "kv_cache must be vLLM's CPU cache"),
    "cache 3-D": (dict(kv_cache=lambda a: a["kv_cache"][0]), "kv_cache must be vLLM's CPU cache"),
    "cache strided": (dict(kv_cache=lambda a: a["kv_cache"].transpose(1, 2).contiguous().transpose(1, 2)), "kv_cache must be contiguous within each"),
    "gqa": (dict(kv_cache=lambda a: torch.randn(a["kv_cache"].shape[0], 3, 16, 16)), "must be a multiple of kv_cache's kv_heads"),
    "seq_lens int64": (dict(seq_lens=lambda a: a["seq_lens"].long()), "seq_lens must be int32"),
    "seq_lens 2-D": (dict(seq_lens=lambda a: a["seq_lens"][None]), "seq_lens must be a 1-D tensor"),
    "starts length": (dict(query_start_loc=lambda a: a["query_start_loc"][:-1]), r"query_start_loc must have shape \[num_requests \+ 1\]"),
    "starts dtype": (dict(query_start_loc=lambda a: a["query_start_loc"].long()), "query_start_loc must be int32"),
    "starts offset": (dict(query_start_loc=torch.tensor([1, 2, 10], dtype=torch.int32)), "query_start_loc must start at 0"),
    "starts decreasing": (dict(query_start_loc=torch.tensor([0, 5, 3], dtype=torch.int32)), "query_start_loc must be non-decreasing"),
    "starts past tokens": (dict(query_start_loc=torch.tensor([0, 1, 11], dtype=torch.int32)), "at most query's tokens"),
    "query longer than sequence": (dict(seq_lens=torch.tensor([20, 8], dtype=torch.int32)), r"seq_lens\[1\] = 8 is shorter"),
    "table dtype": (dict(block_table=lambda a: a["block_table"].long()), "block_table must be int32"),
    "table rows": (dict(block_table=lambda a: a["block_table"][:1]), "block_table must have shape"),
    "table columns": (dict(seq_lens=torch.tensor([200, 9], dtype=torch.int32)), "needs 13 blocks of 16 but block_table has"),
    "block id negative": (dict(block_table=lambda a: torch.where(torch.arange(a["block_table"].shape[1]) == 1, -1, a["block_table"])), r"block_table\[0, 1\] = -1 is not a block"),
    "block id too large": (dict(block_table=lambda a: a["block_table"].clone().index_fill_(1, torch.tensor([0]), 99)), r"block_table\[0, 0\] = 99 is not a block of kv_cache"),
    "log_gamma shape": (dict(log_gamma=torch.zeros(3)), r"log_gamma must have shape \[heads\] = \[4\]"),
    "log_gamma dtype": (dict(log_gamma=torch.zeros(4, dtype=torch.float64)), "log_gamma must be float32"),
    "log_gamma nan": (dict(log_gamma=torch.tensor([0.0, math.nan, 0.0, 0.0])), "log_gamma must be < \\+inf and not NaN.*head 1"),
    "log_gamma +inf": (dict(log_gamma=torch.tensor([0.0, 0.0, math.inf, 0.0])), "log_gamma must be < \\+inf and not NaN.*head 2"),
    "scale": (dict(scale=math.inf), "scale must be finite"),
    "softcap negative": (dict(softcap=-1.0), "softcap must be a finite number >= 0"),
    "softcap nan": (dict(softcap=math.nan), "softcap must be a finite number >= 0"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_are_refused_naming_the_argument(case):
    changes, message = BAD_INPUTS[case]
    with pytest.raises(RuntimeError, match=message):
        call(**changes)


def test_good_arguments_run():
    call()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_query_gets_the_same_bits_however_it_is_batched(dtype):
    # vLLM computes a position in a whole prefill, a chunk of one, or a decode step, beside any
    # other requests; the plugin's results (and so a run through the prefix cache) must not depend on it.
    query, kv_cache, table, starts, lens, _ = build_batch([(150, 150)], 9, 3, 64, 32, dtype=dtype, seed=12)
    log_gamma = torch.linspace(-1.0, 1.0, 9)
    whole = run(query, kv_cache, table, starts, lens, log_gamma, 0.125, 30.0)
    for chunk in (1, 2, 7, 20, 64):  # the last `chunk` queries, after other requests' tokens
        other_query, other_cache, other_table, other_starts, other_lens, _ = build_batch([(40, 5), (9, 1)], 9, 3, 64, 32, dtype=dtype, seed=13)
        blocks = other_cache.shape[0]
        cache = torch.cat([other_cache, kv_cache])
        batch_table = torch.zeros(3, max(other_table.shape[1], table.shape[1]), dtype=torch.int32)
        batch_table[:2, : other_table.shape[1]] = other_table.clamp(min=0)
        batch_table[2, : table.shape[1]] = table[0].clamp(min=0) + blocks
        batch_query = torch.cat([other_query, query[-chunk:]])
        batch_starts = torch.cat([other_starts, other_starts[-1:] + chunk])
        batch_lens = torch.cat([other_lens, lens])
        output = run(batch_query, cache, batch_table, batch_starts, batch_lens, log_gamma, 0.125, 30.0)
        assert torch.equal(output[-chunk:], whole[-chunk:]), f"the last {chunk} queries"
