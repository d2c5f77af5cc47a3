"""Model-level cost of the zerotuning backend: the same loaded model with every head tuned vs stock sdpa.

Two workloads, both in one run on the same threads:

* prefill: one forward of a batch of ``--prefill-batch`` x ``--prefill-tokens`` prompt tokens;
* decode: greedy ``generate`` of ``--decode-new`` tokens (exactly, EOS ignored) after a batch of
  ``--decode-batch`` x ``--decode-tokens`` prompt tokens, with the KV cache.

The peers are one model: stock (its own ``sdpa`` attention) and the same model with a profile
applied whose gammas are all != 1 (``apply`` before, ``remove`` after each zerotuning
measurement, outside the timed region). Each repetition times both back to back, alternating
which goes first, so machine noise hits both alike; the reported ratio is the median of the
per-repetition ratios (zerotuning / stock), with its quartiles and range.

    python scripts/bench_model.py [--model smollm2] [--repeats 15] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from zerotuning import Profile, apply, remove
from zerotuning.atomic_files import write_text_atomically
from zerotuning.models import load_model


def tuned_profile(model) -> Profile:
    """A gamma != 1 on every head: 0.5 .. 2.0 across the heads of a layer (1.0 skipped), shifted per layer."""
    neutral = Profile.neutral(model)
    heads, layers = neutral.identity.num_heads, neutral.identity.num_layers
    grid = [0.5 + 1.5 * i / max(heads - 1, 1) for i in range(heads)]
    grid = [g if abs(g - 1.0) > 1e-3 else 1.1 for g in grid]
    return Profile(neutral.identity, [grid[layer % heads :] + grid[: layer % heads] for layer in range(layers)])


def prompt_ids(tokenizer, batch: int, tokens: int, seed: int) -> torch.Tensor:
    """[batch, tokens] random ordinary token ids, each row starting with the BOS (the sink)."""
    gen = torch.Generator().manual_seed(seed)
    special = set(tokenizer.all_special_ids)
    ordinary = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    ids = ordinary[torch.randint(len(ordinary), (batch, tokens), generator=gen)]
    if tokenizer.bos_token_id is not None:
        ids[:, 0] = tokenizer.bos_token_id
    return ids


def interleaved(workload: Callable[[], None], model, profile: Profile, repeats: int, name: str) -> dict:
    """Median and spread of ``repeats`` interleaved (stock, zerotuning) timings of ``workload``."""

    def timed(peer: str) -> float:
        if peer == "zerotuning":
            apply(model, profile)
        try:
            started = time.perf_counter()
            workload()
            return time.perf_counter() - started
        finally:
            remove(model)

    for peer in ("stock", "zerotuning"):  # warm-up: first-call allocations, the extension's first dispatch
        timed(peer)
    times: dict[str, list[float]] = {"stock": [], "zerotuning": []}
    ratios = []
    for repeat in range(repeats):
        order = ("stock", "zerotuning") if repeat % 2 == 0 else ("zerotuning", "stock")
        pair = {peer: timed(peer) for peer in order}
        for peer, seconds in pair.items():
            times[peer].append(seconds)
        ratios.append(pair["zerotuning"] / pair["stock"])
        print(
            f"{name} {repeat + 1}/{repeats}: stock {1e3 * pair['stock']:.1f} ms, "
            f"zerotuning {1e3 * pair['zerotuning']:.1f} ms, ratio {ratios[-1]:.3f}",
            flush=True,
        )
    quartiles = statistics.quantiles(ratios, n=4)
    return {
        "median_ms": {peer: 1e3 * statistics.median(values) for peer, values in times.items()},
        "median_ratio": statistics.median(ratios),
        "ratio_quartiles": [quartiles[0], quartiles[2]],
        "ratio_range": [min(ratios), max(ratios)],
        "ratios": ratios,
        "ms": {peer: [1e3 * s for s in values] for peer, values in times.items()},
    }


def check_peers_differ(model, profile: Profile, ids: torch.Tensor) -> float:
    """The largest logit change the profile makes (must be > 0: the zerotuning peer really runs tuned)."""
    with torch.no_grad():
        stock = model(ids).logits
        apply(model, profile)
        try:
            tuned = model(ids).logits
        finally:
            remove(model)
    if not torch.isfinite(tuned).all():
        raise RuntimeError("the tuned model produced non-finite logits")
    change = (tuned - stock).abs().max().item()
    if change == 0.0:
        raise RuntimeError("the profile did not change the logits: the zerotuning backend is not running")
    return change


def source_commit() -> str:
    """The repository's commit (with ``-dirty`` if tracked files differ from it), or why there is none."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=root).returncode != 0
    except (OSError, subprocess.CalledProcessError) as error:
        return f"unknown ({error})"
    return commit + ("-dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="what zerotuning.models.load_model loads")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timing pairs per workload")
    parser.add_argument("--prefill-batch", type=int, default=8)
    parser.add_argument("--prefill-tokens", type=int, default=128)
    parser.add_argument("--decode-batch", type=int, default=2)
    parser.add_argument("--decode-tokens", type=int, default=64, help="prompt tokens before decoding")
    parser.add_argument("--decode-new", type=int, default=32, help="tokens generated")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--out", default=None, help="also write the timings as JSON to this (new) file")
    args = parser.parse_args()
    for name in ("repeats", "prefill_batch", "prefill_tokens", "decode_batch", "decode_tokens", "decode_new", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: got {getattr(args, name)}, expected a positive integer")
    if args.repeats < 2:
        parser.error(f"--repeats: got {args.repeats}, expected at least 2 (quartiles)")
    if args.out is not None and Path(args.out).exists():
        parser.error(f"--out: {args.out!r} already exists")
    torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model)
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"the stock peer must run sdpa attention; {args.model} loaded with {model.config._attn_implementation!r}")
    profile = tuned_profile(model)
    prefill_ids = prompt_ids(tokenizer, args.prefill_batch, args.prefill_tokens, seed=0)
    decode_ids = prompt_ids(tokenizer, args.decode_batch, args.decode_tokens, seed=1)
    change = check_peers_differ(model, profile, decode_ids)
    print(f"{args.model}: every one of {sum(map(len, profile.gammas))} heads tuned (gamma 0.5-2.0); max logit change {change:.3g}")

    def prefill() -> None:
        with torch.no_grad():
            model(prefill_ids)

    def decode() -> None:
        model.generate(
            decode_ids,
            attention_mask=torch.ones_like(decode_ids),
            max_new_tokens=args.decode_new,
            min_new_tokens=args.decode_new,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )

    results = {
        "prefill": interleaved(prefill, model, profile, args.repeats, "prefill"),
        "decode": interleaved(decode, model, profile, args.repeats, "decode"),
    }
    summary = {
        "command": " ".join(["python", *sys.argv]),
        "commit": source_commit(),
        "torch": torch.__version__,
        "model": args.model,
        "threads": args.threads,
        "repeats": args.repeats,
        "prefill_shape": f"{args.prefill_batch} x {args.prefill_tokens} prompt tokens",
        "decode_shape": f"{args.decode_batch} x {args.decode_tokens} prompt + {args.decode_new} generated tokens",
        **results,
    }
    for name, result in results.items():
        shape = summary[f"{name}_shape"]
        low, high = result["ratio_quartiles"]
        print(
            f"{name} ({shape}, {args.threads} threads): stock sdpa {result['median_ms']['stock']:.1f} ms, "
            f"zerotuning (every head tuned) {result['median_ms']['zerotuning']:.1f} ms; median ratio "
            f"{result['median_ratio']:.3f} (quartiles {low:.3f}-{high:.3f}, range "
            f"{result['ratio_range'][0]:.3f}-{result['ratio_range'][1]:.3f}, {args.repeats} pairs)"
        )
    if args.out is not None:
        write_text_atomically(args.out, json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
