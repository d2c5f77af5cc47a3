"""What only the CUDA op has: the extension's CUDA build, the rule that picks a path, device-side
value checks, CUDA-graph capture, every output element written, agreement with the CPU op, and
tiny HF models on the GPU. The op's results on each CUDA path against the float64 reference are
in the shared suite, tests/test_sink_attention.py (its cuda-* targets).

Every test needs a CUDA device and skips (with that reason) without one. With a device, an
extension built without its CUDA kernels fails loudly instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from op_support import CUDA_MARKS, DTYPES, PATH_VARIABLE, make_inputs, padding_mask, path_of

from zerotuning import sink_attention

pytestmark = CUDA_MARKS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cuda_inputs(*shape, dtype=torch.float32, seed=0):
    return make_inputs(*shape, dtype=dtype, seed=seed, device="cuda")


@pytest.fixture
def force_path(monkeypatch):
    """force_path("split_kv" | "flash_merge" | "auto"): the path every following call takes."""
    return lambda path: monkeypatch.setenv(PATH_VARIABLE, path)


def test_extension_was_built_with_cuda_kernels():
    assert hasattr(torch.ops.zerotuning, "sink_attention_cuda_path"), (
        "zerotuning was built without its CUDA kernels although a GPU is present: rebuild with torch's CUDA and nvcc"
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_equals_the_cpu_op(dtype):
    q, k, v, log_gamma = make_inputs(2, 8, 2, 45, 45, 64, dtype=dtype, seed=1)
    mask = padding_mask([45, 30], 45, 45)
    options = dict(attn_mask=mask, softcap=20.0, sliding_window=20)
    cpu_out, cpu_lse = sink_attention(q, k, v, log_gamma, return_lse=True, **options)
    gpu_out, gpu_lse = sink_attention(q.cuda(), k.cuda(), v.cuda(), log_gamma.cuda(), return_lse=True,
                                      attn_mask=mask.cuda(), softcap=20.0, sliding_window=20)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, rtol=tol, atol=tol)
    torch.testing.assert_close(gpu_lse.cpu(), cpu_lse, rtol=1e-5, atol=1e-4)


def test_every_output_element_is_written():
    """The caching allocator hands the op a block just filled with NaN: all of it must be overwritten."""
    for path_shape in [(1, 8, 2, 1, 5000, 128), (2, 8, 2, 100, 100, 128)]:
        q, k, v, log_gamma = cuda_inputs(*path_shape, dtype=torch.bfloat16)
        poison = torch.full_like(q, float("nan"))
        poison_lse = torch.full(q.shape[:3], float("nan"), device="cuda")
        del poison, poison_lse
        out, lse = sink_attention(q, k, v, log_gamma, is_causal=True, return_lse=True)
        assert not out.isnan().any() and not lse.isnan().any()


# ---- the rule that picks a path -------------------------------------------------------------------


def test_auto_path_rule(force_path):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    force_path("auto")
    q, k, v, log_gamma = cuda_inputs(1, 8, 2, 64, 64, 64, dtype=torch.bfloat16)
    # torch's SDPA dispatcher decides between cuDNN and flash for the keys-1.. attention.
    rest = q[:, :, 1:], k[:, :, 1:], v[:, :, 1:]
    torch_picks_cudnn = torch.ops.aten._fused_sdp_choice(*rest, is_causal=True, enable_gqa=True) == SDPBackend.CUDNN_ATTENTION.value
    assert path_of(q, k, v, log_gamma, is_causal=True) == ("cudnn_merge" if torch_picks_cudnn else "flash_merge")
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        assert path_of(q, k, v, log_gamma, is_causal=True) == "flash_merge"  # cuDNN disabled by the user
    assert path_of(q, k, v, log_gamma, is_causal=True, sliding_window=8) == "flash_merge"  # cuDNN has no window
    chunk = cuda_inputs(1, 8, 2, 40, 64, 64, dtype=torch.bfloat16)
    assert path_of(*chunk, is_causal=True) == "flash_merge"  # cuDNN's causal diagonal is top-left
    assert path_of(*cuda_inputs(1, 8, 2, 16, 64, 64, dtype=torch.bfloat16)) == "split_kv"  # decode-sized
    assert path_of(*cuda_inputs(1, 8, 2, 17, 64, 64, dtype=torch.bfloat16)) in ("flash_merge", "cudnn_merge")
    assert path_of(*cuda_inputs(1, 8, 2, 64, 64, 100, dtype=torch.bfloat16)) == "split_kv"  # head_dim % 8
    storage = torch.randn(8 * 64 * 64 + 1, device="cuda", dtype=torch.bfloat16)
    shifted_q = storage[1:].view(1, 8, 64, 64)  # rows one element into their storage: not 16-byte aligned
    assert path_of(shifted_q, k, v, log_gamma, is_causal=True) == "split_kv"
    mask = torch.ones(64, 64, dtype=torch.bool, device="cuda")
    blocked = {
        "attn_mask": dict(attn_mask=mask),
        "sink_index": dict(sink_index=torch.zeros(1, dtype=torch.int64, device="cuda")),
        "softcap": dict(softcap=10.0),
        "window without causal": dict(sliding_window=8, is_causal=False),
    }
    for name, options in blocked.items():
        options = {"is_causal": True, **options}
        assert path_of(q, k, v, log_gamma, **options) == "split_kv", name
    assert path_of(q.float(), k.float(), v.float(), log_gamma, is_causal=True) == "split_kv"


def test_forced_paths_and_their_errors(force_path):
    q, k, v, log_gamma = cuda_inputs(1, 8, 2, 64, 64, 64, dtype=torch.bfloat16)
    force_path("split_kv")
    assert path_of(q, k, v, log_gamma, is_causal=True) == "split_kv"
    force_path("flash_merge")
    mask = torch.ones(64, 64, dtype=torch.bool, device="cuda")
    with pytest.raises(RuntimeError, match="ZEROTUNING_CUDA_PATH=flash_merge, but this call cannot take that path: attn_mask is given"):
        sink_attention(q, k, v, log_gamma, attn_mask=mask)
    with pytest.raises(RuntimeError, match="q is float32"):
        sink_attention(q.float(), k.float(), v.float(), log_gamma)
    force_path("cudnn_merge")
    with pytest.raises(RuntimeError, match="cudnn_merge, but this call cannot take that path: sliding_window is given"):
        sink_attention(q, k, v, log_gamma, is_causal=True, sliding_window=8)
    with pytest.raises(RuntimeError, match="is_causal with len_q != len_k"):
        sink_attention(q[:, :, :40], k, v, log_gamma, is_causal=True)
    force_path("fastest")
    with pytest.raises(RuntimeError, match="ZEROTUNING_CUDA_PATH must be auto, split_kv, flash_merge or cudnn_merge, got 'fastest'"):
        sink_attention(q, k, v, log_gamma)


# ---- values checked on the device -----------------------------------------------------------------


def run_isolated(code: str) -> subprocess.CompletedProcess:
    """A device-side assert poisons the CUDA context, so each check runs in its own process."""
    program = "import torch, zerotuning\n" + textwrap.dedent(code) + "\ntorch.cuda.synchronize()\n"
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


BAD_VALUES = [
    ("sink_index=torch.tensor([0, 60], device='cuda')", "sink_index values must be in [-1, len_k)"),
    ("sink_index=torch.tensor([-2, 0], device='cuda')", "sink_index values must be in [-1, len_k)"),
    ("log_gamma=torch.tensor([0.0, float('inf'), 0.0, 0.0], device='cuda')", "log_gamma must be finite"),
    ("log_gamma=torch.tensor([0.0, float('nan'), 0.0, 0.0], device='cuda')", "log_gamma must be finite"),
]


# The merge paths never take a sink_index (the path rule), so only log_gamma is checked there.
@pytest.mark.parametrize(
    "call, message, path",
    [(call, message, "split_kv") for call, message in BAD_VALUES]
    + [(call, message, path) for call, message in BAD_VALUES if "log_gamma" in call for path in ("flash_merge", "cudnn_merge")],
)
def test_bad_values_trip_a_device_side_assert(call, message, path):
    code = f"""
        import os
        os.environ["{PATH_VARIABLE}"] = "{path}"
        q = torch.randn(2, 4, 40, 64, device="cuda", dtype=torch.float16)
        k = torch.randn(2, 2, 60, 64, device="cuda", dtype=torch.float16)
        v = torch.randn(2, 2, 60, 64, device="cuda", dtype=torch.float16)
        args = dict(log_gamma=torch.zeros(4, device="cuda"))
        args.update(dict({call}))
        zerotuning.sink_attention(q, k, v, args.pop("log_gamma"), **args)
    """
    result = run_isolated(code)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"the bad value was accepted:\n{output}"
    assert message in output and "device-side assert" in output, output


def test_good_values_pass_the_device_side_checks():
    result = run_isolated("""
        q = torch.randn(2, 4, 5, 16, device="cuda")
        k = torch.randn(2, 2, 6, 16, device="cuda")
        zerotuning.sink_attention(q, k, k, torch.zeros(4, device="cuda"), sink_index=torch.tensor([-1, 5], device="cuda"))
    """)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- torch integration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, options",
    [
        ((1, 8, 2, 1, 4000, 128), dict(is_causal=True)),  # decode: split_kv with key splits
        ((2, 8, 2, 64, 64, 64), dict(is_causal=True)),  # prefill: flash_merge
        ((2, 8, 2, 20, 20, 64), dict(mask=True)),  # padding mask: sinks resolved on the device
    ],
    ids=["decode", "prefill", "masked"],
)
def test_cuda_graph_capture_and_replay(shape, options):
    """Capture fails on any host sync, so this also proves the op never syncs."""
    q, k, v, log_gamma = cuda_inputs(*shape, dtype=torch.bfloat16)
    options = dict(options)
    if options.pop("mask", False):
        options["attn_mask"] = padding_mask([shape[4], shape[4] - 7], shape[3], shape[4]).cuda()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            sink_attention(q, k, v, log_gamma, **options)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = sink_attention(q, k, v, log_gamma, **options)
    fresh = cuda_inputs(*shape, dtype=torch.bfloat16, seed=99)
    for static, new in zip((q, k, v, log_gamma), fresh):
        static.copy_(new)
    graph.replay()
    torch.testing.assert_close(captured, sink_attention(*fresh, **options), rtol=0, atol=0)


# ---- a tiny HF model on the GPU -------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gemma2", "mistral"])
def test_tiny_model_on_cuda_matches_the_eager_peer(family):
    from hf_eager_peer import peer_logits
    from test_hf_equivalence import mixed_profile
    from tiny_models import left_padded, prompts, tiny_model

    from zerotuning import Profile, applied

    model = tiny_model(family).cuda()
    profile = mixed_profile(model)
    input_ids, attention_mask = (t.cuda() for t in left_padded(prompts([9, 6, 3])))
    expected = peer_logits(model, input_ids, attention_mask, profile.gammas)
    neutral = peer_logits(model, input_ids, attention_mask, Profile.neutral(model).gammas)
    with applied(model, profile), torch.no_grad():
        got = model(input_ids, attention_mask=attention_mask).logits
    kept = attention_mask.bool()
    torch.testing.assert_close(got[kept], expected[kept], atol=5e-5, rtol=1e-5)
    assert (got[kept] - neutral[kept]).abs().max() > 1e-2, "the profile did not change the logits"


def test_tiny_llama_generates_on_cuda_as_on_the_cpu():
    """Greedy decoding with a KV cache (split_kv decode steps with the glue's sink_index) on the GPU
    gives the CPU op's tokens and logits."""
    from test_hf_equivalence import mixed_profile
    from tiny_models import left_padded, prompts, tiny_model

    from zerotuning import applied

    def greedy(model, input_ids, attention_mask):
        with torch.no_grad():
            return model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6, min_new_tokens=6,
                                  do_sample=False, pad_token_id=0, return_dict_in_generate=True, output_logits=True)

    model = tiny_model("llama")
    profile = mixed_profile(model)
    input_ids, attention_mask = left_padded(prompts([11, 7, 2]))
    with applied(model, profile):
        on_cpu = greedy(model, input_ids, attention_mask)
    model.cuda()
    with applied(model, profile):
        on_gpu = greedy(model, input_ids.cuda(), attention_mask.cuda())
    assert torch.equal(on_gpu.sequences.cpu(), on_cpu.sequences)
    for step, (gpu_logits, cpu_logits) in enumerate(zip(on_gpu.logits, on_cpu.logits)):
        torch.testing.assert_close(gpu_logits.cpu(), cpu_logits, atol=1e-4, rtol=1e-4, msg=lambda m: f"step {step}: {m}")

