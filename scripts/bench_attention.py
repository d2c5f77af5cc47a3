"""Times zerotuning's sink attention against its peers, in one run, on the same threads.

Peers: torch SDPA with no gamma (the speed to match; on CUDA each backend separately), SDPA with a
per-head float mask carrying the bias, the published eager approach (materialise the softmax,
scale the sink column, renormalise), and FlexAttention with a score_mod where it runs.
Repetitions are interleaved across implementations so machine noise hits all of them alike;
the median is reported. Every gamma-carrying peer's output is compared with ours.

    python scripts/bench_attention.py                       # CPU preset (issue 2 shapes)
    python scripts/bench_attention.py --device cuda --preset gpu --json bench_gpu.json
    python scripts/bench_attention.py --backward --preset train   # forward + backward

With --backward every implementation runs forward and backward (gradients for q, k, v, and for
log_gamma where the peer carries it) and the gradients are compared with ours.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass

# Inductor compiles FlexAttention in this process: worker pools would steal the cores being timed.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch
import torch.nn.functional as F

import zerotuning
from zerotuning.atomic_files import write_text_atomically


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    heads_q: int
    heads_kv: int
    len_q: int
    len_k: int
    head_dim: int
    causal: bool


PRESETS = {
    "cpu": [
        Case("prefill-512", 1, 16, 4, 512, 512, 64, True),
        Case("prefill-2048", 1, 16, 4, 2048, 2048, 64, True),
        Case("decode-4096", 1, 16, 4, 1, 4096, 64, False),
    ],
    "gpu": [
        Case("prefill-4096", 4, 32, 8, 4096, 4096, 128, True),
        Case("decode-8192", 4, 32, 8, 1, 8192, 128, False),
    ],
    "smoke": [Case("prefill-64", 1, 4, 2, 64, 64, 32, True), Case("decode-128", 1, 4, 2, 1, 128, 32, False)],
    # Gradient ZeroTuning's calibration passes: a batch of short prompts, and longer sequences.
    "train": [
        Case("prefill-128x8", 8, 16, 4, 128, 128, 64, True),
        Case("prefill-512", 1, 16, 4, 512, 512, 64, True),
        Case("prefill-2048", 1, 16, 4, 2048, 2048, 64, True),
    ],
}


def make_inputs(case: Case, dtype, device):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(case.batch, case.heads_q, case.len_q, case.head_dim, generator=gen)
    k = torch.randn(case.batch, case.heads_kv, case.len_k, case.head_dim, generator=gen)
    v = torch.randn(case.batch, case.heads_kv, case.len_k, case.head_dim, generator=gen)
    log_gamma = torch.linspace(-1.0, 1.0, case.heads_q)
    return [t.to(device) for t in (q.to(dtype), k.to(dtype), v.to(dtype))] + [log_gamma.to(device)]


def causal_allowed(case: Case, device):
    q_pos = torch.arange(case.len_q, device=device)[:, None] + (case.len_k - case.len_q)
    return torch.arange(case.len_k, device=device)[None, :] <= q_pos


# ---- implementations: each returns a zero-argument callable ----------------------------------------


def impl_zerotuning(case, q, k, v, log_gamma):
    return lambda: zerotuning.sink_attention(q, k, v, log_gamma, is_causal=case.causal)


def impl_sdpa(case, q, k, v, log_gamma, backend=None):
    def run():
        return F.scaled_dot_product_attention(q, k, v, is_causal=case.causal and case.len_q > 1, enable_gqa=True)

    if backend is None:
        return run
    from torch.nn.attention import sdpa_kernel

    def run_with_backend():
        with sdpa_kernel(backend):
            return run()

    return run_with_backend


def impl_sdpa_bias_mask(case, q, k, v, log_gamma):
    """The bias as a per-head additive float mask: an [Hq, Lq, Lk] tensor per call."""

    def run():
        mask = torch.zeros(case.heads_q, case.len_q, case.len_k, dtype=q.dtype, device=q.device)
        if case.causal:
            mask.masked_fill_(~causal_allowed(case, q.device), float("-inf"))
        mask[:, :, 0] += log_gamma.to(q.dtype)[:, None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None], enable_gqa=True)

    return run


def impl_eager_published(case, q, k, v, log_gamma):
    """The published code's way: repeat K/V, materialise softmax, scale column 0, renormalise."""
    group = case.heads_q // case.heads_kv
    def run():
        gamma = log_gamma.exp().to(q.dtype)[None, :, None]
        kr = k.repeat_interleave(group, dim=1)
        vr = v.repeat_interleave(group, dim=1)
        scores = torch.matmul(q, kr.transpose(-1, -2)) / math.sqrt(case.head_dim)
        if case.causal:
            scores = scores.masked_fill(~causal_allowed(case, q.device), float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        if torch.is_grad_enabled():  # autograd needs softmax's output unmodified
            probs = torch.cat([probs[..., :1] * gamma[..., None], probs[..., 1:]], dim=-1)
        else:
            probs[..., 0] *= gamma
        probs = probs / probs.sum(dim=-1, keepdim=True)
        return torch.matmul(probs, vr)

    return run


def impl_flex(case, q, k, v, log_gamma):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    offset = case.len_k - case.len_q

    def score_mod(score, b, h, q_idx, kv_idx):
        return torch.where(kv_idx == 0, score + log_gamma[h], score)

    block_mask = None
    if case.causal:
        block_mask = create_block_mask(
            lambda b, h, q_idx, kv_idx: kv_idx <= q_idx + offset,
            None, None, case.len_q, case.len_k, device=str(q.device),
        )
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda: compiled(q, k, v, score_mod=score_mod, block_mask=block_mask, enable_gqa=True)


def with_backward(make, case, q, k, v, log_gamma, seed=1):
    """Forward + backward of one implementation: a callable returning its gradients (q, k, v and,
    when the peer carries gamma, log_gamma), from leaves of its own."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v, log_gamma)]
    forward = make(case, *leaves)
    gen = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(q.shape, generator=gen).to(q.dtype).to(q.device)

    def run():
        for leaf in leaves:
            leaf.grad = None
        forward().backward(grad_out)
        return [leaf.grad for leaf in leaves]

    return run


def gradient_diff(grads, reference):
    """Largest |difference| over the gradients both have, relative to ours' largest magnitude."""
    pairs = [(g, r) for g, r in zip(grads, reference) if g is not None and r is not None]
    worst = max((g.float() - r.float()).abs().max().item() for g, r in pairs)
    return worst / max(r.float().abs().max().item() for _, r in pairs)


# ---- measurement ----------------------------------------------------------------------------------


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak_memory(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets the peak resident set size
        f.write("5")
    return read_status_kib("VmRSS") * 1024


def peak_memory(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return read_status_kib("VmHWM") * 1024


def read_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_peak_extra_mib(fn, device):
    base = reset_peak_memory(device)
    out = fn()
    synchronize(device)
    extra = peak_memory(device) - base
    del out
    return max(extra, 0) / 2**20


def bench_case(case, dtype, device, repeats, with_flex, backward=False):
    q, k, v, log_gamma = make_inputs(case, dtype, device)
    impls = {"zerotuning": impl_zerotuning, "sdpa": impl_sdpa}
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend

        for name, backend in [("sdpa-flash", SDPBackend.FLASH_ATTENTION),
                              ("sdpa-efficient", SDPBackend.EFFICIENT_ATTENTION),
                              ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION)]:
            impls[name] = lambda c, *t, _b=backend: impl_sdpa(c, *t, backend=_b)
    impls["sdpa+bias-mask"] = impl_sdpa_bias_mask
    impls["eager-published"] = impl_eager_published
    if with_flex and not backward:
        impls["flex-score_mod"] = impl_flex

    def runner(make):
        if backward:
            return with_backward(make, case, q, k, v, log_gamma)
        return make(case, q, k, v, log_gamma)

    def difference(out, reference):
        if backward:
            return gradient_diff(out, reference)
        return (out.float() - reference).abs().max().item()

    runners, errors = {}, {}
    with torch.inference_mode(not backward):
        reference = runner(impl_zerotuning)()
        reference = reference if backward else reference.float()
        for name, make in impls.items():
            try:
                fn = runner(make)
                out = fn()  # warm-up (and compilation for flex)
                synchronize(device)
                runners[name] = fn
                if name not in ("zerotuning", "sdpa") and not name.startswith("sdpa-"):
                    errors[name] = difference(out, reference)
            except Exception as exc:  # a peer that cannot run this case is reported, not hidden
                runners[name] = exc

        times = {name: [] for name, fn in runners.items() if callable(fn)}
        for _ in range(repeats):
            for name in times:
                synchronize(device)
                start = time.perf_counter()
                runners[name]()
                synchronize(device)
                times[name].append(time.perf_counter() - start)
        memory = {name: measure_peak_extra_mib(runners[name], device) for name in times}

    sdpa_names = [n for n in times if n == "sdpa" or n.startswith("sdpa-")]
    fastest_sdpa = min(statistics.median(times[n]) for n in sdpa_names)
    rows = []
    for name, fn in runners.items():
        row = dict(case=case.name, dtype=str(dtype).replace("torch.", ""), impl=name, backward=backward, **case.__dict__)
        if callable(fn):
            ms = statistics.median(times[name]) * 1e3
            row.update(ms=ms, ratio_to_fastest_sdpa=ms / (fastest_sdpa * 1e3), peak_extra_mib=memory[name])
            if name in errors:
                row["max_abs_diff_vs_zerotuning"] = errors[name]
        else:
            row["error"] = f"{type(fn).__name__}: {str(fn).splitlines()[0][:160]}"
        rows.append(row)
    return rows


def print_rows(rows):
    print(f"{'case':<14}{'dtype':<10}{'impl':<18}{'ms':>10}{'x SDPA':>9}{'peak MiB':>10}{'|diff|':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['case']:<14}{r['dtype']:<10}{r['impl']:<18}  not run: {r['error']}")
            continue
        diff = f"{r['max_abs_diff_vs_zerotuning']:.1e}" if "max_abs_diff_vs_zerotuning" in r else ""
        print(f"{r['case']:<14}{r['dtype']:<10}{r['impl']:<18}{r['ms']:>10.3f}{r['ratio_to_fastest_sdpa']:>9.3f}"
              f"{r['peak_extra_mib']:>10.1f}{diff:>10}")
    sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="shape set (default: cpu on the CPU, gpu on CUDA)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated (default: float32,bfloat16)")
    parser.add_argument("--repeats", type=int, default=15, help="timed repetitions per implementation (default 15)")
    parser.add_argument("--no-flex", action="store_true", help="skip FlexAttention (its compile is slow on CPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--backward", action="store_true",
                        help="time forward + backward (no FlexAttention); |diff| is then the largest gradient "
                             "difference relative to ours' largest gradient")
    parser.add_argument("--json", help="write the table as JSON to this path")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    preset = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    info = dict(torch=torch.__version__, device=str(device), threads=torch.get_num_threads(),
                cpu_isa=zerotuning.cpu_isa(), preset=preset, repeats=args.repeats, backward=args.backward)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(info))
    rows = []
    for dtype in dtypes:
        for case in PRESETS[preset]:
            case_rows = bench_case(case, dtype, device, args.repeats, not args.no_flex, args.backward)
            print_rows(case_rows)
            rows += case_rows
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        write_text_atomically(args.json, json.dumps(dict(info=info, rows=rows), indent=2) + "\n")


if __name__ == "__main__":
    main()
