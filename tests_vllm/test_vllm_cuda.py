"""The CUDA half of the vLLM plugin on a GPU, with vLLM's CUDA build (scripts/gpu_check_vllm.sh runs it).

Skipped without a CUDA device. Two levels:

* the kernels: vLLM's own ``flash_attn_varlen_func`` (FA2 and FA3 where this GPU has them) on
  random paged caches in float16 and bfloat16 (decode batches with grouped-query heads, whole,
  chunked and prefix-shared prefills, softcap): its log-sum-exp ``[H, T]`` and output against the
  float64 definition, then ZeroTuning's impl (the real kernel, the sink gathering, the correction)
  against float64 sink-biased attention;
* an engine on the default model (``ZEROTUNING_VLLM_MODEL``, or exported once): an all-ones
  profile gives stock vLLM's tokens and log-probabilities; a tuned profile is compared with float32
  transformers + zerotuning (teacher-forced over vLLM's tokens). FlashAttention runs in float16 or
  bfloat16 only (``ZEROTUNING_VLLM_CUDA_DTYPE``, default float16), so stock vLLM itself is not
  within 1e-3 of float32 transformers; the tuned run must be as close to float32 transformers +
  zerotuning as stock vLLM is to float32 transformers (bounds below), and both gaps are printed and
  written to ``$ZEROTUNING_GPU_OUT/vllm_cuda_engine.json`` when that is set.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device and vLLM's CUDA build")]

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from flash_paged_support import expected_attention, paged_batch  # noqa: E402

DTYPE = os.environ.get("ZEROTUNING_VLLM_CUDA_DTYPE", "float16")
# How much closer than stock the tuned run must stay to float32 transformers (same prompts, same dtype).
GAP_FACTOR, GAP_SLACK, MISMATCH_SLACK = 2.0, 1e-3, 2


def fa_versions():
    try:
        from vllm.vllm_flash_attn.flash_attn_interface import is_fa_version_supported
    except ImportError:
        return []
    return [version for version in (2, 3) if is_fa_version_supported(version)]


KERNEL_CASES = {
    "decode batch": [(5, 1), (17, 1), (300, 1), (1, 1), (64, 1)],
    "prefills": [(9, 9), (130, 130), (1, 1)],
    "chunked and mixed": [(40, 12), (70, 3), (23, 1), (50, 50), (200, 64)],
}


def to_cuda(batch):
    batch.query, batch.kv_cache = batch.query.cuda(), batch.kv_cache.cuda()
    batch.block_table, batch.query_start_loc, batch.seq_lens = batch.block_table.cuda(), batch.query_start_loc.cuda(), batch.seq_lens.cuda()
    return batch


@pytest.mark.parametrize("case", list(KERNEL_CASES))
@pytest.mark.parametrize("softcap", [0.0, 30.0])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fa_version", [2, 3])
def test_real_flash_attention_lse_and_the_corrected_output(fa_version, dtype, softcap, case, monkeypatch):
    if fa_version not in fa_versions():
        pytest.skip(f"FA{fa_version} is not available on this GPU")
    from vllm.v1.attention.backends import fa_utils

    from zerotuning.vllm import cuda_backend, layer_gammas
    from zerotuning.vllm.layer_gammas import ServedProfile
    from test_vllm_cuda_backend import CONFIG, GAMMAS, HEADS, KV_HEADS, attention_layer, metadata_of, tuned

    heads, kv_heads, head_dim = HEADS, KV_HEADS, 64  # the profile knows heads, not their size
    batch = to_cuda(paged_batch(KERNEL_CASES[case], heads, kv_heads, head_dim, 16, dtype=dtype, seed=3))
    scale = 0.25
    # 1. the kernel's own log-sum-exp and output, plain attention
    key_cache, value_cache = batch.kv_cache.transpose(1, 2).split(head_dim, dim=-1)
    out = torch.empty_like(batch.query)
    qsl = batch.query_start_loc
    _, lse = fa_utils.flash_attn_varlen_func(
        q=batch.query, k=key_cache, v=value_cache, out=out, cu_seqlens_q=qsl, max_seqlen_q=int((qsl[1:] - qsl[:-1]).max()),
        seqused_k=batch.seq_lens, max_seqlen_k=int(batch.seq_lens.max()), softmax_scale=scale, causal=True, block_table=batch.block_table,
        softcap=softcap, fa_version=fa_version, return_softmax_lse=True,
    )
    plain, plain_lse = expected_attention(batch.per_request, torch.zeros(heads), scale, softcap or None)
    assert tuple(lse.shape) == (heads, batch.num_tokens)
    torch.testing.assert_close(lse.double().cpu(), plain_lse, atol=1e-3, rtol=1e-4)
    kernel_error = (out.double().cpu() - plain).abs().max().item()
    assert kernel_error < 2e-2

    # 2. the impl with the same kernel: sink-biased attention
    served = ServedProfile.create(tuned(), "'test.json'", CONFIG)
    monkeypatch.setattr(layer_gammas, "served_profile", lambda vllm_config: served)
    monkeypatch.setattr(cuda_backend, "get_current_vllm_config", lambda: SimpleNamespace(speculative_config=None))
    monkeypatch.setattr(cuda_backend, "get_tensor_model_parallel_rank", lambda: 0)
    impl = cuda_backend.ZeroTuningFlashAttentionImpl(heads, head_dim, scale, kv_heads, None, None, "auto", logits_soft_cap=softcap or None)
    impl.vllm_flash_attn_version = fa_version
    one = torch.ones(1, device="cuda")
    layer = attention_layer(1)
    layer._q_scale = layer._k_scale = layer._v_scale = one
    output = torch.empty_like(batch.query)
    metadata = metadata_of(batch)
    impl.forward(layer, batch.query, None, None, batch.kv_cache, metadata, output)
    expected, _ = expected_attention(batch.per_request, torch.tensor([math.log(g) for g in GAMMAS]), scale, softcap or None)
    error = (output.double().cpu() - expected).abs().max().item()
    # the kernel's rounding, grown at most 1 / min(gamma) = 4x by the correction, plus the final rounding
    assert error <= 4 * kernel_error + 4 * torch.finfo(dtype).eps, f"corrected error {error:.3g}, kernel's own {kernel_error:.3g}"


# ---- the engine ---------------------------------------------------------------------------------


def cuda_engine(model, **extra):
    from vllm import LLM

    from test_vllm_plugin import CHUNK_TOKENS

    return LLM(
        str(model), dtype=DTYPE, max_model_len=512, enforce_eager=True, max_num_seqs=16, seed=0, gpu_memory_utilization=0.3,
        attention_backend="FLASH_ATTN", enable_prefix_caching=True, enable_chunked_prefill=True, max_num_batched_tokens=CHUNK_TOKENS,
        **extra,
    )


@pytest.fixture(scope="module")
def engine_parts(exported_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from test_vllm_plugin import INSTRUCTION, QUESTIONS, STANDALONE

    tokenizer = AutoTokenizer.from_pretrained(exported_model)
    prompts = [tokenizer(text).input_ids for text in [INSTRUCTION + q for q in QUESTIONS] + STANDALONE]
    hf_model = AutoModelForCausalLM.from_pretrained(exported_model, dtype=torch.float32).eval()  # the reference, on the CPU
    return SimpleNamespace(prompts=prompts, hf_model=hf_model)


@pytest.fixture(scope="module")
def stock_runs(exported_model, engine_parts):
    from test_vllm_plugin import generate, shutdown

    llm = cuda_engine(exported_model)
    generate(llm, engine_parts.prompts)  # fills the prefix cache
    runs = (generate(llm, engine_parts.prompts), generate(llm, engine_parts.prompts))
    shutdown(llm)
    return runs


@pytest.fixture(scope="module")
def plugin_llm(exported_model, engine_parts, stock_runs, tmp_path_factory):
    from zerotuning import Profile
    from zerotuning.vllm import WORKER_EXTENSION

    from test_vllm_plugin import shutdown

    neutral = tmp_path_factory.mktemp("profiles") / "neutral.json"
    Profile.neutral(engine_parts.hf_model).save(neutral)
    llm = cuda_engine(exported_model, additional_config={"zerotuning_profile": str(neutral)}, worker_extension_cls=WORKER_EXTENSION)
    yield llm
    shutdown(llm)


def worst_gap(outputs, expected) -> float:
    return max((abs(a - b) for (_, ours), (_, theirs) in zip(outputs, expected) for a, b in zip(ours, theirs)), default=0.0)


def against_transformers(model, profile, prompts, outputs):
    from test_vllm_plugin import transformers_reference

    reference = transformers_reference(model, profile, prompts, outputs)
    mismatches = sum(t != g for (tokens, _), (greedy, _) in zip(outputs, reference) for t, g in zip(tokens, greedy))
    return worst_gap(outputs, reference), mismatches


def record(name, values):
    print(f"{name}: {values}")
    folder = os.environ.get("ZEROTUNING_GPU_OUT")
    if folder:
        path = Path(folder) / "vllm_cuda_engine.json"
        data = json.loads(path.read_text()) if path.is_file() else {"dtype": DTYPE}
        data[name] = values
        path.write_text(json.dumps(data, indent=2))


def test_a_neutral_profile_gives_stock_tokens_and_logprobs_on_cuda(plugin_llm, engine_parts, stock_runs):
    from test_vllm_plugin import RUN_TO_RUN, generate

    run_to_run = worst_gap(*stock_runs)
    generate(plugin_llm, engine_parts.prompts)
    ours = generate(plugin_llm, engine_parts.prompts)
    gap = worst_gap(ours, stock_runs[1])
    record("neutral_vs_stock", {"stock_run_to_run": run_to_run, "neutral_vs_stock": gap})
    assert [t for t, _ in ours] == [t for t, _ in stock_runs[1]]
    assert gap <= max(run_to_run, RUN_TO_RUN)


def test_a_tuned_profile_is_as_close_to_transformers_with_zerotuning_as_stock_is_to_transformers(plugin_llm, engine_parts, stock_runs):
    from zerotuning import Profile
    from zerotuning.vllm import swap_profile

    from test_vllm_plugin import RUN_TO_RUN, generate, tuned_profile

    model, prompts = engine_parts.hf_model, engine_parts.prompts
    profile = tuned_profile(Profile.neutral(model).identity)
    swap_profile(plugin_llm, profile)
    first = generate(plugin_llm, prompts)
    second = generate(plugin_llm, prompts)  # through the prefix cache filled under the tuned profile
    assert [t for t, _ in second] == [t for t, _ in first] and worst_gap(second, first) <= RUN_TO_RUN
    assert [t for t, _ in first] != [t for t, _ in stock_runs[1]], "the profile changed nothing: the corrected path did not run"
    stock_gap, stock_mismatches = against_transformers(model, Profile.neutral(model), prompts, stock_runs[1])
    tuned_gap, tuned_mismatches = against_transformers(model, profile, prompts, first)
    record("tuned_vs_transformers", {
        "stock_vs_float32_transformers": {"max_logprob_gap": stock_gap, "greedy_mismatches": stock_mismatches},
        "tuned_vs_float32_transformers_zerotuning": {"max_logprob_gap": tuned_gap, "greedy_mismatches": tuned_mismatches},
        "tokens": sum(len(t) for t, _ in first),
    })
    assert tuned_mismatches <= stock_mismatches + MISMATCH_SLACK
    assert tuned_gap <= GAP_FACTOR * stock_gap + GAP_SLACK, f"tuned gap {tuned_gap:.3g} against stock's {stock_gap:.3g}"


def test_swapping_back_to_neutral_restores_stock_outputs_on_cuda(plugin_llm, engine_parts, stock_runs):
    from zerotuning import Profile
    from zerotuning.vllm import swap_profile

    from test_vllm_plugin import RUN_TO_RUN, generate

    swap_profile(plugin_llm, Profile.neutral(engine_parts.hf_model))
    ours = generate(plugin_llm, engine_parts.prompts)
    assert [t for t, _ in ours] == [t for t, _ in stock_runs[1]]
    assert worst_gap(ours, stock_runs[1]) <= max(worst_gap(*stock_runs), RUN_TO_RUN)
