"""Where the zerotuning backend's per-call cost sits, piece by piece, against stock sdpa's.

Captures the real arguments transformers passes to one attention layer (and to the mask
function) in a decoding step and in a prefill of the default model with every head tuned, then
times, on those arguments, each piece of the call path:

* the whole attention function, stock ``sdpa_attention_forward`` vs ``zerotuning_attention``;
* inside ``zerotuning_attention``: the keyword-argument check, the sink look-up, the log-gamma
  look-up, the ``zerotuning.sink_attention`` wrapper, the op through the dispatcher (with and
  without its autograd kernel), and the output transpose;
* once per forward: transformers' ``sdpa_mask`` vs ``zerotuning_mask`` (which adds the sinks).

Each piece is timed as the median over ``--rounds`` rounds of ``--calls`` back-to-back calls
(rounds of all pieces interleaved), in microseconds per call. The per-step figures multiply
per-layer costs by the number of layers.

    python scripts/profile_backend_cost.py [--model smollm2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from zerotuning import apply, remove
from zerotuning import ops
from zerotuning.atomic_files import write_text_atomically
from zerotuning.hf import backend, sinks
from zerotuning.models import load_model

# scripts/ is not a package: the benchmark's helpers by path.
import importlib.util

_spec = importlib.util.spec_from_file_location("bench_model", Path(__file__).with_name("bench_model.py"))
bench_model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_model)


def capture_calls(model, run: Callable[[], None]) -> tuple[list[tuple], list[dict]]:
    """The (args, kwargs) of every zerotuning attention call and every mask call that ``run`` makes."""
    attention_calls, mask_calls = [], []

    def attention(*args, **kwargs):
        attention_calls.append((args, kwargs))
        return backend.zerotuning_attention(*args, **kwargs)

    def mask(*args, **kwargs):
        mask_calls.append((args, kwargs))
        return backend.zerotuning_mask(*args, **kwargs)

    AttentionInterface.register(backend.BACKEND_NAME, attention)
    AttentionMaskInterface.register(backend.BACKEND_NAME, mask)
    try:
        run()
    finally:
        backend.register_backend()
    return attention_calls, mask_calls


def time_pieces(pieces: dict[str, Callable[[], object]], calls: int, rounds: int) -> dict[str, float]:
    """Median microseconds per call of each piece, rounds of all pieces interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in pieces}
    for name, piece in pieces.items():  # warm-up
        for _ in range(10):
            piece()
    for _ in range(rounds):
        for name, piece in pieces.items():
            started = time.perf_counter()
            for _ in range(calls):
                piece()
            samples[name].append(1e6 * (time.perf_counter() - started) / calls)
    return {name: statistics.median(values) for name, values in samples.items()}


def attention_pieces(model, args: tuple, kwargs: dict) -> dict[str, Callable[[], object]]:
    """The call-path pieces of one attention layer, on the arguments transformers gave it."""
    module, query, key, value, attention_mask = args
    scaling = kwargs.get("scaling")
    extra = {k: v for k, v in kwargs.items() if k not in ("dropout", "scaling", "sliding_window", "softcap", "is_causal")}
    sliding_window = kwargs.get("sliding_window")
    kind = sinks.mask_kind(sliding_window)
    kv_length = key.shape[-2]
    sink_index = sinks.recorded(module, kind, kv_length, query.device)
    log_gamma = backend.log_gamma_of(module)
    causal = attention_mask is None
    op_args = (query, key, value, log_gamma, sink_index, attention_mask, causal, scaling, None, None)
    out = ops.sink_attention(query, key, value, log_gamma, sink_index=sink_index, attn_mask=attention_mask, is_causal=causal, scale=scaling)

    def op_below_autograd():
        with torch._C._AutoDispatchBelowAutograd():
            return ops.SINK_ATTENTION_OP(*op_args)

    return {
        "stock sdpa_attention_forward": lambda: sdpa_attention_forward(*args, **kwargs),
        "zerotuning_attention": lambda: backend.zerotuning_attention(*args, **kwargs),
        "  kwargs check (_refuse_unsupported)": lambda: backend._refuse_unsupported(module, 0.0, extra),
        "  sink look-up (sinks.recorded)": lambda: sinks.recorded(module, kind, kv_length, query.device),
        "  log-gamma look-up (log_gamma_of)": lambda: backend.log_gamma_of(module),
        "  ops.sink_attention (wrapper + op)": lambda: ops.sink_attention(
            query, key, value, log_gamma, sink_index=sink_index, attn_mask=attention_mask, is_causal=causal, scale=scaling
        ),
        "  op via dispatcher, autograd kernel": lambda: ops.SINK_ATTENTION_OP(*op_args),
        "  op via dispatcher, below autograd": op_below_autograd,
        "  output transpose + contiguous": lambda: out.transpose(1, 2).contiguous(),
        "torch sdpa alone (enable_gqa)": lambda: torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=scaling, is_causal=causal and query.shape[2] > 1, enable_gqa=True
        ),
    }


def mask_pieces(args: tuple, kwargs: dict) -> dict[str, Callable[[], object]]:
    return {
        "stock sdpa_mask": lambda: sdpa_mask(*args, **kwargs),
        "zerotuning_mask": lambda: backend.zerotuning_mask(*args, **kwargs),
        "  sinks.sink_index_per_row": lambda: sinks.sink_index_per_row(
            kwargs.get("attention_mask"), args[0] if args else kwargs["batch_size"], kwargs.get("kv_offset", 0), torch.device("cpu")
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--calls", type=int, default=200, help="calls per timing round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (median)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=None, help="also write the figures as JSON to this (new) file")
    args = parser.parse_args()
    if args.calls < 1 or args.rounds < 1 or args.threads < 1:
        parser.error(f"--calls, --rounds, --threads: got {args.calls}, {args.rounds}, {args.threads}; expected positive integers")
    if args.out is not None and Path(args.out).exists():
        parser.error(f"--out: {args.out!r} already exists")
    torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model)
    layers = model.config.num_hidden_layers
    profile = bench_model.tuned_profile(model)
    prefill_ids = bench_model.prompt_ids(tokenizer, 8, 128, seed=0)
    decode_ids = bench_model.prompt_ids(tokenizer, 2, 64, seed=1)
    results = {"model": args.model, "threads": args.threads, "layers": layers}
    apply(model, profile)
    try:
        with torch.no_grad():
            cache = model(decode_ids, use_cache=True).past_key_values
            step_ids = decode_ids[:, -1:]
            mask = torch.ones(2, 65, dtype=torch.long)
            workloads = {
                "decode step (2 x 1 query, 65 keys)": lambda: model(
                    step_ids, attention_mask=mask, past_key_values=cache, use_cache=True,
                    position_ids=torch.full((2, 1), 64),
                ),
                "prefill (8 x 128)": lambda: model(prefill_ids),
            }
            for name, run in workloads.items():
                attention_calls, mask_calls = capture_calls(model, run)
                # Sinks are cleared after each forward: re-record the ones this forward used.
                mask_args, mask_kwargs = mask_calls[0]
                backend.zerotuning_mask(*mask_args, **mask_kwargs)
                state = getattr(attention_calls[0][0][0], sinks._MODULE_ATTRIBUTE)
                layer_args, layer_kwargs = attention_calls[0]
                per_layer = time_pieces(attention_pieces(model, layer_args, layer_kwargs), args.calls, args.rounds)
                per_forward = time_pieces(mask_pieces(mask_args, mask_kwargs), args.calls, args.rounds)
                state.clear()
                q = layer_args[1]
                print(f"\n{name}: q {list(q.shape)}, k {list(layer_args[2].shape)}, mask "
                      f"{None if layer_args[4] is None else list(layer_args[4].shape)}, kwargs {sorted(layer_kwargs)}")
                print(f"  per layer (x{layers} per forward), us per call:")
                for piece, us in per_layer.items():
                    print(f"    {piece:40s} {us:8.1f}")
                print("  per forward (once), us per call:")
                for piece, us in per_forward.items():
                    print(f"    {piece:40s} {us:8.1f}")
                extra = layers * (per_layer["zerotuning_attention"] - per_layer["stock sdpa_attention_forward"]) + (
                    per_forward["zerotuning_mask"] - per_forward["stock sdpa_mask"]
                )
                print(f"  zerotuning - stock per forward: {extra / 1e3:.3f} ms "
                      f"(attention x{layers} + mask)")
                results[name] = {"per_layer_us": per_layer, "per_forward_us": per_forward, "extra_ms_per_forward": extra / 1e3}
    finally:
        remove(model)
    if args.out is not None:
        write_text_atomically(args.out, json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
