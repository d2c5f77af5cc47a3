"""A fake of vLLM 0.32's CUDA paged KV cache and of its flash-attention call, on CPU tensors.

vLLM 0.32's FlashAttention backend keeps a layer's cache as ``kv_cache [num_blocks, kv_heads,
block_size, 2 * D]`` (keys in the first half of the last dimension, values in the second; the
physical order of the dimensions depends on the layout, so any strides) and attends through the
views ``kv_cache.transpose(1, 2).split(D, dim=-1)``, each ``[num_blocks, block_size, kv_heads, D]``.
``paged_batch`` builds such a cache with requests scattered over its blocks; ``flash_attention``
stands in for ``flash_attn_varlen_func(..., return_softmax_lse=True)``: plain causal attention
over the paged cache computed in float64 from the definition (``zerotuning.reference``), returning
the output in the query's dtype and the log-sum-exp ``[H, T]`` in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zerotuning.reference import sink_attention_reference


@dataclass
class PagedBatch:
    query: torch.Tensor  # [T, H, D] packed
    kv_cache: torch.Tensor  # [num_blocks, kv_heads, block_size, 2 * D]
    block_table: torch.Tensor  # [R, max_blocks] int32
    query_start_loc: torch.Tensor  # [R + 1] int32
    seq_lens: torch.Tensor  # [R] int32
    per_request: list  # (k [S, KVH, D], v [S, KVH, D], q [Lq, H, D]) float64

    @property
    def num_tokens(self) -> int:
        return self.query.shape[0]

    def cache_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        head_dim = self.kv_cache.shape[-1] // 2
        return self.kv_cache.transpose(1, 2).split(head_dim, dim=-1)


def paged_batch(requests, heads, kv_heads, head_dim, block_size, *, dtype=torch.float32, seed=0, shared_first_block=False,
                heads_outer=True, padded_requests=0) -> PagedBatch:
    """requests: (seq_len, query_len) pairs, each request's queries its last query_len positions.

    ``heads_outer``: the physical layout puts KV heads outside block slots (vLLM's HND) or inside (NHD).
    ``shared_first_block``: every request reuses request 0's first block (prefix caching), so their first
    ``block_size`` positions equal request 0's. ``padded_requests``: extra entries at the end of
    ``query_start_loc`` repeating its end, as vLLM pads batches for CUDA graphs.
    """
    gen = torch.Generator().manual_seed(seed)
    counts = [-(-seq_len // block_size) for seq_len, _ in requests]
    total = sum(counts) + 3
    order = torch.randperm(total, generator=gen).tolist()
    if heads_outer:
        kv_cache = torch.randn(total, kv_heads, block_size, 2 * head_dim, generator=gen).to(dtype)
    else:  # [blocks, slots, heads, 2D] in memory, seen as [blocks, heads, slots, 2D]
        kv_cache = torch.randn(total, block_size, kv_heads, 2 * head_dim, generator=gen).to(dtype).transpose(1, 2)
    keys, values = kv_cache.transpose(1, 2).split(head_dim, dim=-1)
    block_table = torch.full((len(requests) + padded_requests, max(counts) + 1), total - 1, dtype=torch.int32)
    per_request, queries, starts = [], [], [0]
    first = None
    for r, (seq_len, query_len) in enumerate(requests):
        k = torch.randn(seq_len, kv_heads, head_dim, generator=gen, dtype=torch.float64).to(dtype).double()
        v = torch.randn(seq_len, kv_heads, head_dim, generator=gen, dtype=torch.float64).to(dtype).double()
        own = [order.pop() for _ in range(counts[r])]
        if shared_first_block and r > 0:
            own[0] = int(block_table[0, 0])
            shared = min(block_size, seq_len, first[0].shape[0])
            k[:shared], v[:shared] = first[0][:shared], first[1][:shared]
        block_table[r, : len(own)] = torch.tensor(own, dtype=torch.int32)
        for position in range(seq_len):
            block, slot = own[position // block_size], position % block_size
            keys[block, slot] = k[position].to(dtype)
            values[block, slot] = v[position].to(dtype)
        if r == 0:
            first = (k, v)
        q = torch.randn(query_len, heads, head_dim, generator=gen, dtype=torch.float64).to(dtype).double()
        per_request.append((k, v, q))
        queries.append(q)
        starts.append(starts[-1] + query_len)
    starts += [starts[-1]] * padded_requests
    seq_lens = [seq_len for seq_len, _ in requests] + [0] * padded_requests
    return PagedBatch(
        torch.cat(queries).to(dtype), kv_cache, block_table, torch.tensor(starts, dtype=torch.int32),
        torch.tensor(seq_lens, dtype=torch.int32), per_request,
    )


def expected_attention(per_request, log_gamma, scale, softcap=None):
    """Packed float64 (out [T, H, D], lse [H, T]) of causal attention with ``log_gamma`` on each request's position 0."""
    outs, lses = [], []
    for k, v, q in per_request:
        out, lse = sink_attention_reference(
            q.permute(1, 0, 2)[None], k.permute(1, 0, 2)[None], v.permute(1, 0, 2)[None], log_gamma.double(),
            is_causal=True, scale=scale, softcap=softcap,
        )
        outs.append(out[0].permute(1, 0, 2))
        lses.append(lse[0])
    return torch.cat(outs), torch.cat(lses, dim=1)


def flash_attention(*, q, k, v, out, cu_seqlens_q, max_seqlen_q, seqused_k, max_seqlen_k, softmax_scale, causal, block_table,
                    softcap=0.0, window_size=None, alibi_slopes=None, return_softmax_lse=False, s_aux=None, calls=None, **rest):
    """``flash_attn_varlen_func`` over a paged cache, from the definition in float64 (plain attention: no sink bias)."""
    if calls is not None:
        calls.append(dict(causal=causal, window_size=window_size, softcap=softcap, softmax_scale=softmax_scale,
                          return_softmax_lse=return_softmax_lse, alibi_slopes=alibi_slopes, s_aux=s_aux,
                          max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, **rest))
    assert causal is True and alibi_slopes is None and s_aux is None
    assert window_size in (None, [-1, -1], (-1, -1))
    tokens, heads, head_dim = q.shape
    block_size = k.shape[1]
    lse = torch.empty(heads, tokens, dtype=torch.float32)
    starts = cu_seqlens_q.tolist()
    for r, seq_len in enumerate(seqused_k.tolist()):
        first, end = starts[r], min(starts[r + 1], tokens)
        if end <= first:
            continue
        blocks = block_table[r, : -(-seq_len // block_size)].long()
        keys = k[blocks].flatten(0, 1)[:seq_len].double()
        values = v[blocks].flatten(0, 1)[:seq_len].double()
        o, l = sink_attention_reference(
            q[first:end].double().permute(1, 0, 2)[None], keys.permute(1, 0, 2)[None], values.permute(1, 0, 2)[None],
            torch.zeros(heads, dtype=torch.float64), is_causal=True, scale=softmax_scale, softcap=softcap or None,
        )
        out[first:end] = o[0].permute(1, 0, 2).to(out.dtype)
        lse[:, first:end] = l[0].float()
    return (out, lse) if return_softmax_lse else out
