"""Tokens/s of vLLM with the zerotuning plugin (every head tuned) against stock vLLM, in one run.

    .venv-vllm/bin/python scripts/bench_vllm.py MODEL_FOLDER [--pairs 7]

MODEL_FOLDER is a `zerotuning export` folder (without a profile in it). Two engines with the same
settings are started side by side: stock (no profile) and the plugin with gamma 1.5 on every head.
Calls alternate between them (interleaved pairs) for a prefill-heavy load (16 prompts of ~400
tokens, 1 new token each) and a decode-heavy one (16 short prompts, 64 new tokens each); the
script prints the median tokens/s of each and the median of the per-pair time ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import torch  # noqa: E402
import vllm  # noqa: E402
from transformers import AutoConfig  # noqa: E402
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402

from zerotuning import Profile  # noqa: E402
from zerotuning.atomic_files import write_text_atomically  # noqa: E402
from zerotuning.profile import ModelIdentity  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import source_commit  # noqa: E402

SETTINGS = dict(dtype="float32", max_model_len=1024, enforce_eager=True, max_num_seqs=16, seed=0, enable_prefix_caching=False)


def loads(vocab: int) -> dict:
    def ids(length: int, salt: int) -> list[int]:
        return [1] + [(salt * 7919 + position * 104729) % (vocab - 100) + 100 for position in range(length - 1)]

    return {
        "prefill-heavy (16 x ~400 prompt tokens, 1 new)": ([ids(380 + 3 * i, i) for i in range(16)], 1),
        "decode-heavy (16 x ~20 prompt tokens, 64 new)": ([ids(16 + i, i) for i in range(16)], 64),
    }


def generate(llm: LLM, prompts: list[list[int]], new_tokens: int):
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    return llm.generate([TokensPrompt(prompt_token_ids=row) for row in prompts], params, use_tqdm=False)


def timed(llm: LLM, prompts: list[list[int]], new_tokens: int) -> tuple[float, int]:
    start = time.perf_counter()
    outputs = generate(llm, prompts, new_tokens)
    seconds = time.perf_counter() - start
    processed = sum(len(row) for row in prompts) + sum(len(o.outputs[0].token_ids) for o in outputs)
    return seconds, processed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    config = AutoConfig.from_pretrained(args.model)
    identity = ModelIdentity(config.model_type, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads)
    profile_path = Path(tempfile.mkdtemp()) / "all_heads_1.5.json"
    Profile.uniform(identity, 1.5).save(profile_path)
    stock = LLM(str(args.model), **SETTINGS)
    plugin = LLM(str(args.model), **SETTINGS, additional_config={"zerotuning_profile": str(profile_path)})
    prompts, new_tokens = list(loads(config.vocab_size).values())[1][0], 16  # the decode-heavy prompts
    if [o.outputs[0].token_ids for o in generate(stock, prompts, new_tokens)] == [o.outputs[0].token_ids for o in generate(plugin, prompts, new_tokens)]:
        raise SystemExit("bench_vllm: the plugin engine gave stock vLLM's tokens: the zerotuning path did not run")
    figures = {}
    for name, (prompts, new_tokens) in loads(config.vocab_size).items():
        timed(stock, prompts, new_tokens), timed(plugin, prompts, new_tokens)  # warm-up
        ratios, stock_rates, plugin_rates, seconds = [], [], [], []
        for pair in range(args.pairs):
            order = (stock, plugin) if pair % 2 == 0 else (plugin, stock)
            results = {id(llm): timed(llm, prompts, new_tokens) for llm in order}
            (s_time, s_tokens), (p_time, p_tokens) = results[id(stock)], results[id(plugin)]
            ratios.append(p_time / s_time)
            seconds.append({"stock": s_time, "plugin": p_time})
            stock_rates.append(s_tokens / s_time)
            plugin_rates.append(p_tokens / p_time)
        figures[name] = dict(
            stock_tokens_per_s=statistics.median(stock_rates), plugin_tokens_per_s=statistics.median(plugin_rates),
            time_ratio_median=statistics.median(ratios), time_ratio_range=[min(ratios), max(ratios)], pairs=args.pairs,
            pair_seconds=seconds,
        )
        f = figures[name]
        print(f"{name}: stock {f['stock_tokens_per_s']:.0f} tok/s, plugin {f['plugin_tokens_per_s']:.0f} tok/s, "
              f"plugin/stock time {f['time_ratio_median']:.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}, {args.pairs} pairs)")
    if args.json:
        record = {
            "command": " ".join(["python", *sys.argv]),
            "commit": source_commit(),
            "vllm": vllm.__version__,
            "torch": torch.__version__,
            "threads": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_KVCACHE_SPACE")},
            "settings": SETTINGS,
            "block_size": stock.llm_engine.vllm_config.cache_config.block_size,
            "profile": "gamma 1.5 on every head of every layer",
            **figures,
        }
        write_text_atomically(args.json, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
