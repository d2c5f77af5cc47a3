"""Cost of the zerotuning lm-eval path: ZeroTuningLM with a neutral profile vs lm-eval's plain HFLM.

Both drive the same loaded model (default: SmolLM2-135M, float32, CPU) on the same lm-eval
requests (default: the built-in sentiment task exported for lm-eval, its 198 test documents).
Each repetition times both request runs back to back, alternating which goes first; the ratio
reported is the median of the per-repetition ratios (zerotuning / plain). Requests are built
once, so the times are lm-eval's request handling plus the model, not task loading.

    .venv-lm-eval/bin/python scripts/bench_lm_eval.py [--model smollm2] [--repeats 9] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager, get_task_dict

from zerotuning import Profile
from zerotuning.atomic_files import write_text_atomically
from zerotuning.lm_eval import ZeroTuningLM, export_task
from zerotuning.models import load_model
from zerotuning.tasks.loader import TaskRequest, load_task

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="what zerotuning.models.load_model loads")
    parser.add_argument("--task", default="sentiment", help="the zerotuning task exported for lm-eval")
    parser.add_argument("--batch-size", type=int, default=8, help="HFLM batch size for both")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved timing pairs")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the timings as JSON to this (new) file")
    args = parser.parse_args()
    if args.out is not None and args.out.exists():
        parser.error(f"--out: {str(args.out)!r} already exists")
    torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model)
    with tempfile.TemporaryDirectory() as folder:
        yaml_path = export_task(load_task(TaskRequest(source=args.task)), folder)
        task = get_task_dict([yaml_path.stem], TaskManager(include_path=folder, include_defaults=False))[yaml_path.stem]
        task.build_all_requests(rank=0, world_size=1)
    requests: dict[str, list] = {}  # request type (the LM method lm-eval calls) -> its instances
    for instance in task.instances:
        requests.setdefault(instance.request_type, []).append(instance)
    runners = {
        "plain": HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size),
        "zerotuning": ZeroTuningLM(model, tokenizer, Profile.neutral(model), batch_size=args.batch_size),
    }

    def timed(name: str) -> float:
        started = time.perf_counter()
        for request_type, instances in requests.items():
            getattr(runners[name], request_type)(instances, disable_tqdm=True)
        return time.perf_counter() - started

    for name in runners:  # warm-up: first-call allocations, the extension's first dispatch
        timed(name)
    times: dict[str, list[float]] = {name: [] for name in runners}
    ratios = []
    for repeat in range(args.repeats):
        order = ("plain", "zerotuning") if repeat % 2 == 0 else ("zerotuning", "plain")
        pair = {name: timed(name) for name in order}
        for name, seconds in pair.items():
            times[name].append(seconds)
        ratios.append(pair["zerotuning"] / pair["plain"])
        print(f"repeat {repeat + 1}/{args.repeats}: plain {pair['plain']:.3f} s, zerotuning {pair['zerotuning']:.3f} s, ratio {ratios[-1]:.3f}")

    summary = {
        "model": args.model,
        "task": yaml_path.stem,
        "requests": {request_type: len(instances) for request_type, instances in requests.items()},
        "batch_size": args.batch_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "median_seconds": {name: statistics.median(values) for name, values in times.items()},
        "median_ratio": statistics.median(ratios),
        "ratios": ratios,
        "times": times,
    }
    print(
        f"{', '.join(f'{count} {kind}' for kind, count in summary['requests'].items())} requests, batch {args.batch_size}, {args.threads} threads: "
        f"plain {summary['median_seconds']['plain']:.3f} s, zerotuning (neutral profile) {summary['median_seconds']['zerotuning']:.3f} s; "
        f"median ratio zerotuning / plain = {summary['median_ratio']:.3f} (target <= 1.05)"
    )
    if args.out is not None:
        write_text_atomically(args.out, json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
