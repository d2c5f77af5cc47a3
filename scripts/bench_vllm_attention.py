"""One attention layer of the vLLM CPU plugin against vLLM's own CPU kernel, on the same paged cache.

    .venv-vllm/bin/python scripts/bench_vllm_attention.py [--rounds 30] [--json FILE]

Shapes of the default model (SmolLM2: 9 query heads, 3 KV heads, head_dim 64) in float32, with
vLLM's CPU block size 128 and ISA ``vec``, for the two loads of ``scripts/bench_vllm.py``: the
whole prefill of 16 prompts of ~400 tokens (one call holding all of them), and one decode step
of 16 requests with 32 to 80 cached positions. Times ``torch.ops._C.cpu_attention_with_kv_cache``
(what stock vLLM runs) and ``torch.ops.zerotuning.sink_attention_paged`` (what the plugin runs on
a layer with gamma != 1), interleaved, median over rounds, milliseconds per call. It also checks
that the two read the cache the same way: with every gamma 1 the outputs must agree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import vllm
from vllm import _custom_ops as ops

import zerotuning.ops  # noqa: F401  (registers torch.ops.zerotuning)
from zerotuning.atomic_files import write_text_atomically

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import source_commit  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 9, 3, 64, 128
LOADS = {
    "prefill: 16 prompts x 380-425 tokens, whole": [(380 + 3 * i, 380 + 3 * i) for i in range(16)],
    "decode step: 16 requests, 32-80 cached positions": [(32 + 3 * i, 1) for i in range(16)],
}


def batch(requests, gen):
    blocks = [-(-seq // BLOCK) for seq, _ in requests]
    table = torch.zeros(len(requests), max(blocks), dtype=torch.int32)
    order = torch.randperm(sum(blocks), generator=gen).to(torch.int32)
    start = 0
    for r, count in enumerate(blocks):
        table[r, :count] = order[start : start + count]
        start += count
    cache = torch.randn(sum(blocks), KV_HEADS, BLOCK, 2 * HEAD_DIM, generator=gen)
    starts = torch.tensor([0] + [q for _, q in requests], dtype=torch.int32).cumsum(0).to(torch.int32)
    seq_lens = torch.tensor([seq for seq, _ in requests], dtype=torch.int32)
    query = torch.randn(int(starts[-1]), HEADS, HEAD_DIM, generator=gen)
    return query, cache, table, starts, seq_lens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    scale = HEAD_DIM**-0.5
    figures = {}
    for name, requests in LOADS.items():
        query, cache, table, starts, seq_lens = batch(requests, gen)
        key_cache, value_cache = cache.view(cache.shape[0], KV_HEADS, 2 * BLOCK, HEAD_DIM).chunk(2, dim=2)
        metadata = ops.cpu_attn_get_scheduler_metadata(
            num_reqs=len(requests), num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM, seq_lens=seq_lens,
            dtype=torch.float32, query_start_loc=starts, causal=True, sliding_window_size=-1, isa="vec", enable_kv_split=False,
        )
        stock_out, plugin_out = torch.empty_like(query), torch.empty_like(query)

        def stock():
            ops.cpu_attention_with_kv_cache(
                query=query, key_cache=key_cache, value_cache=value_cache, output=stock_out, query_start_loc=starts,
                seq_lens=seq_lens, scale=scale, causal=True, alibi_slopes=None, sliding_window=-1, block_table=table,
                softcap=0.0, scheduler_metadata=metadata, s_aux=None,
            )

        def plugin(log_gamma):
            torch.ops.zerotuning.sink_attention_paged(query, cache, table, starts, seq_lens, log_gamma, scale, 0.0, plugin_out)

        stock()
        plugin(torch.zeros(HEADS))
        agreement = (stock_out - plugin_out).abs().max().item()
        tuned = torch.full((HEADS,), 0.4055)  # gamma 1.5
        times = {"stock": [], "plugin": []}
        for _ in range(args.rounds):
            for label, call in (("stock", stock), ("plugin", lambda: plugin(tuned))):
                begin = time.perf_counter()
                call()
                times[label].append(1e3 * (time.perf_counter() - begin))
        stock_ms, plugin_ms = statistics.median(times["stock"]), statistics.median(times["plugin"])
        figures[name] = dict(stock_ms=stock_ms, plugin_ms=plugin_ms, plugin_over_stock=plugin_ms / stock_ms,
                             max_abs_difference_at_gamma_1=agreement)
        print(f"{name}: vLLM {stock_ms:.3f} ms, zerotuning {plugin_ms:.3f} ms ({plugin_ms / stock_ms:.2f}x); "
              f"gamma 1 outputs differ by {agreement:.1e}")
    if args.json:
        record = {"command": " ".join(["python", *sys.argv]), "commit": source_commit(), "vllm": vllm.__version__,
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "rounds": args.rounds, **figures}
        write_text_atomically(args.json, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
