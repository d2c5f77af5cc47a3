"""Sink-bias attention over vLLM's paged CPU KV cache, in plain PyTorch (fp32 arithmetic).

vLLM's CPU kernel takes no per-key bias and returns no log-sum-exp, so layers with a gamma != 1
run this instead. It reads the cache in the layout vLLM's CPU build (ISAs ``vec``/``vec16``)
writes: per block and KV head, the keys transposed ``[D, block_size]`` and the values
``[block_size, D]``, the two halves of ``kv_cache[block, head]`` (``cpu_block_views``).

The sink of request ``r`` is its position 0, which is slot 0 of ``block_table[r, 0]``: also with
prefix caching (a shared first block still holds position 0) and chunked prefill (earlier chunks
are in the cache). Every query of a request attends causally to its first ``seq_lens[r]``
positions; ``log_gamma[h]`` is added to key 0's logit after softcapping (docs/method.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Queries of one prefill handled at once: bounds the [heads, chunk, keys] score tensor.
QUERY_CHUNK = 256


@dataclass(frozen=True)
class BatchPlan:
    """Which tokens belong to which request: one-query requests together, longer ones each alone."""

    decode_rows: torch.Tensor  # [n] request indices with one query
    decode_tokens: torch.Tensor  # [n] their token index in the packed query
    decode_seq_lens: torch.Tensor  # [n]
    decode_blocks: int  # blocks needed for the longest of them
    prefills: tuple[tuple[int, int, int, int], ...]  # (request, first token, query length, sequence length)

    @classmethod
    def of(cls, query_start_loc: torch.Tensor, seq_lens: torch.Tensor, block_size: int, num_tokens: int) -> "BatchPlan":
        starts = query_start_loc.tolist()
        lengths = seq_lens.tolist()
        decode, prefills = [], []
        for request, length in enumerate(lengths):
            first, end = starts[request], min(starts[request + 1], num_tokens)
            if end - first <= 0:
                continue
            if end - first == 1:
                decode.append((request, first, length))
            else:
                prefills.append((request, first, end - first, length))
        rows = torch.tensor([item[0] for item in decode], dtype=torch.long)
        decode_lengths = torch.tensor([item[2] for item in decode], dtype=torch.long)
        longest = max((item[2] for item in decode), default=0)
        return cls(
            decode_rows=rows,
            decode_tokens=torch.tensor([item[1] for item in decode], dtype=torch.long),
            decode_seq_lens=decode_lengths,
            decode_blocks=-(-longest // block_size),
            prefills=tuple(prefills),
        )


def cpu_block_views(kv_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``kv_cache [blocks, kv_heads, block_size, 2 * D]`` -> keys ``[blocks, kv_heads, D, block_size]``, values ``[blocks, kv_heads, block_size, D]``."""
    blocks, kv_heads, block_size, twice_d = kv_cache.shape
    head_dim = twice_d // 2
    halves = kv_cache.view(blocks, kv_heads, 2, block_size * head_dim)
    return halves[:, :, 0].unflatten(-1, (head_dim, block_size)), halves[:, :, 1].unflatten(-1, (block_size, head_dim))


def sink_attention_paged(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    block_table: torch.Tensor,
    plan: BatchPlan,
    log_gamma: torch.Tensor,
    scale: float,
    output: torch.Tensor,
    softcap: float = 0.0,
) -> torch.Tensor:
    """Write each planned token's attention into ``output [T, H, D]``; returns ``output``.

    ``query [T, H, D]``; ``keys``/``values`` as from ``cpu_block_views``; ``block_table [R, max_blocks]``;
    ``log_gamma [H]`` float32 (0: head untouched). Heads ``h`` use KV head ``h // (H / kv_heads)``.
    """
    num_heads, head_dim = query.shape[1], query.shape[2]
    kv_heads, block_size = keys.shape[1], keys.shape[3]
    group = num_heads // kv_heads
    bias = log_gamma.to(torch.float32).view(kv_heads, group)
    if plan.decode_rows.numel():
        n = plan.decode_rows.numel()
        blocks = block_table[plan.decode_rows, : plan.decode_blocks].long()
        length = plan.decode_blocks * block_size
        k = keys[blocks].permute(0, 2, 3, 1, 4).reshape(n, kv_heads, head_dim, length)
        v = values[blocks].permute(0, 2, 1, 3, 4).reshape(n, kv_heads, length, head_dim)
        q = query[plan.decode_tokens].view(n, kv_heads, group, head_dim).float()
        scores = torch.matmul(q, k.float()).mul_(scale)
        hidden = torch.arange(length) >= plan.decode_seq_lens[:, None]  # [n, length]
        weights = _softmax_with_sink_bias(scores, bias, softcap, hidden[:, None, None, :])  # scores [n, kv, g, keys]
        output[plan.decode_tokens] = torch.matmul(weights, v.float()).view(n, num_heads, head_dim).to(output.dtype)
    for request, first, query_len, seq_len in plan.prefills:
        block_count = -(-seq_len // block_size)
        blocks = block_table[request, :block_count].long()
        k = keys[blocks].permute(1, 2, 0, 3).reshape(kv_heads, head_dim, block_count * block_size)[..., :seq_len].float()
        v = values[blocks].permute(1, 0, 2, 3).reshape(kv_heads, block_count * block_size, head_dim)[:, :seq_len].float()
        for chunk in range(0, query_len, QUERY_CHUNK):
            rows = min(QUERY_CHUNK, query_len - chunk)
            tokens = slice(first + chunk, first + chunk + rows)
            q = query[tokens].view(rows, kv_heads, group, head_dim).permute(1, 2, 0, 3).float()  # [kv, g, rows, D]
            scores = torch.matmul(q, k[:, None]).mul_(scale)  # [kv, g, rows, seq_len]
            positions = torch.arange(seq_len - query_len + chunk, seq_len - query_len + chunk + rows)
            hidden = torch.arange(seq_len)[None, :] > positions[:, None]  # causal
            weights = _softmax_with_sink_bias(scores, bias[..., None], softcap, hidden)
            attended = torch.matmul(weights, v[:, None])  # [kv, g, rows, D]
            output[tokens] = attended.permute(2, 0, 1, 3).reshape(rows, num_heads, head_dim).to(output.dtype)
    return output


def _softmax_with_sink_bias(scores: torch.Tensor, bias: torch.Tensor, softcap: float, hidden: torch.Tensor) -> torch.Tensor:
    """Softcap, add ``bias`` to key 0 (the sink, always visible to a causal query), hide, softmax; in place."""
    if softcap > 0:
        scores = scores.div_(softcap).tanh_().mul_(softcap)
    scores[..., 0] += bias
    return scores.masked_fill_(hidden, float("-inf")).softmax(dim=-1)
