"""The CUDA sink-attention op: both of its paths against the float64 reference, the rule that picks
a path, device-side value checks, CUDA-graph capture, and a tiny HF model on the GPU.

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
import torch.nn.functional as F
from test_sink_attention import assert_matches_reference, make_inputs, padding_mask

from zerotuning import sink_attention

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)"),
]

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
PATH_VARIABLE = "ZEROTUNING_CUDA_PATH"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cuda_inputs(*shape, dtype=torch.float32, seed=0):
    return [t.cuda() for t in make_inputs(*shape, dtype=dtype, seed=seed)]


def path_of(q, k, v, log_gamma, **options) -> str:
    """The path the op takes for this call (ZEROTUNING_CUDA_PATH applies)."""
    return torch.ops.zerotuning.sink_attention_cuda_path(
        q, k, v, log_gamma, options.get("sink_index"), options.get("attn_mask"), options.get("is_causal", False),
        options.get("scale"), options.get("softcap"), options.get("sliding_window"),
    )


@pytest.fixture
def force_path(monkeypatch):
    """force_path("split_kv" | "flash_merge" | "auto"): the path every following call takes."""
    return lambda path: monkeypatch.setenv(PATH_VARIABLE, path)


def path_can_serve(path, dtype, lq, lk, d, causal) -> bool:
    """The path rule of csrc/cuda/cuda_path.h for mask-free calls without softcap or window."""
    if path == "split_kv":
        return True
    merge = dtype != torch.float32 and lk >= 2 and d % 8 == 0
    if path == "flash_merge":
        return merge
    return merge and lk >= 3 and (lq == lk or not causal)


def cudnn_attention_can_serve_rest(q, k, v, causal) -> bool:
    """Whether torch's cuDNN attention runs the keys-1.. problem of cudnn_merge on this build."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    offset = 1 if causal else 0
    rest = q[:, :, offset:], k[:, :, 1:], v[:, :, 1:]
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        try:
            choice = torch.ops.aten._fused_sdp_choice(*rest, is_causal=causal, enable_gqa=True)
        except RuntimeError:  # "No available kernel": cuDNN cannot serve it
            return False
    return choice == SDPBackend.CUDNN_ATTENTION.value


def skip_unless_cudnn_serves(path, q, k, v, causal):
    if path == "cudnn_merge" and not cudnn_attention_can_serve_rest(q, k, v, causal):
        pytest.skip(f"this torch's cuDNN attention cannot run {tuple(q.shape)} x {tuple(k.shape)} {q.dtype} "
                    f"causal={causal} (torch's SDPA would not use it either)")


def test_extension_was_built_with_cuda_kernels():
    assert hasattr(torch.ops.zerotuning, "sink_attention_cuda_path"), (
        "zerotuning was built without its CUDA kernels although a GPU is present: rebuild with torch's CUDA and nvcc"
    )


# ---- both paths against the reference -------------------------------------------------------------

SHAPES = [
    # b, hq, hkv, lq, lk, d
    (1, 4, 4, 1, 700, 64),  # decode, MHA
    (2, 8, 2, 1, 1500, 64),  # decode, GQA 4
    (2, 8, 1, 1, 129, 80),  # decode, MQA
    (1, 32, 8, 1, 8192, 128),  # the benchmark's decode step at batch 1: many key splits
    (4, 4, 4, 1, 3000, 256),  # decode, largest head dim
    (1, 8, 4, 37, 37, 128),  # odd prefill, GQA 2
    (3, 4, 4, 33, 53, 64),  # chunked prefill: Lq < Lk
    (1, 4, 4, 40, 20, 64),  # more queries than keys: the first see none under causal
    (1, 16, 2, 70, 600, 64),  # GQA 8, many key tiles
    (2, 8, 2, 300, 300, 128),  # a longer prefill
    (2, 2, 1, 19, 19, 256),  # largest head dim
    (1, 4, 2, 24, 24, 100),  # head dim not a multiple of 8: element-wise loads
    (1, 3, 3, 5, 7, 8),  # tiny head dim, odd heads
    (1, 2, 2, 1, 1, 64),  # a single key
]
PATHS = ["split_kv", "flash_merge", "cudnn_merge"]
CASES = [
    (shape, dtype, path, causal)
    for shape in SHAPES
    for dtype in DTYPES
    for causal in (False, True)
    for path in PATHS
    if path_can_serve(path, dtype, shape[3], shape[4], shape[5], causal)
]


@pytest.mark.parametrize(
    "shape, dtype, path, causal", CASES, ids=lambda c: "x".join(map(str, c)) if isinstance(c, tuple) else str(c)
)
def test_matches_reference(shape, dtype, path, causal, force_path):
    force_path(path)
    q, k, v, log_gamma = cuda_inputs(*shape, dtype=dtype, seed=sum(shape))
    skip_unless_cudnn_serves(path, q, k, v, causal)
    assert path_of(q, k, v, log_gamma, is_causal=causal) == path
    assert_matches_reference(q, k, v, log_gamma, is_causal=causal)


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


@pytest.mark.parametrize("path", PATHS)
def test_gamma_one_equals_sdpa(path, force_path):
    force_path(path)
    q, k, v, _ = cuda_inputs(2, 8, 2, 64, 64, 64, dtype=torch.bfloat16)
    skip_unless_cudnn_serves(path, q, k, v, True)
    out = sink_attention(q, k, v, torch.zeros(8, device="cuda"), is_causal=True)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("path", PATHS)
def test_gamma_changes_sink_weight_as_method_states(path, force_path):
    """a_s' = gamma a_s / (1 + (gamma - 1) a_s): with v = one-hot at the sink, out[..., 0] = a_s."""
    force_path(path)
    q, k, _, _ = cuda_inputs(1, 2, 2, 24, 24, 16, dtype=torch.float16)
    v = torch.zeros(1, 2, 24, 16, dtype=torch.float16, device="cuda")
    skip_unless_cudnn_serves(path, q, k, v, True)
    v[:, :, 0, 0] = 1.0
    gamma = torch.tensor([3.0, 0.25], device="cuda")
    base = sink_attention(q, k, v, torch.zeros(2, device="cuda"), is_causal=True)[..., 0].float()
    tuned = sink_attention(q, k, v, gamma.log(), is_causal=True)[..., 0].float()
    g = gamma[None, :, None]
    torch.testing.assert_close(tuned, g * base / (1 + (g - 1) * base), rtol=3e-3, atol=3e-3)


# ---- masks, sinks and the other options (split_kv; flash_merge where it applies) ------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_left_padding_finds_each_rows_sink(dtype):
    lengths = [50, 31, 1, 17]
    lk = max(lengths)
    q, k, v, log_gamma = cuda_inputs(4, 4, 2, lk, lk, 64, dtype=dtype, seed=3)
    mask = padding_mask(lengths, lk, lk).cuda()
    out, _ = assert_matches_reference(q, k, v, log_gamma, attn_mask=mask)
    explicit = torch.tensor([lk - n for n in lengths], device="cuda")
    torch.testing.assert_close(out, sink_attention(q, k, v, log_gamma, attn_mask=mask, sink_index=explicit))


def test_decode_step_with_left_padding():
    q, k, v, log_gamma = cuda_inputs(2, 8, 2, 1, 3000, 64, dtype=torch.bfloat16, seed=4)
    mask = padding_mask([3000, 1200], 1, 3000).cuda()
    assert_matches_reference(q, k, v, log_gamma, attn_mask=mask, is_causal=True)


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_additive_float_masks(mask_dtype):
    q, k, v, log_gamma = cuda_inputs(2, 4, 2, 9, 23, 32, seed=5)
    gen = torch.Generator().manual_seed(1)
    mask = torch.randn(2, 4, 9, 23, generator=gen).to(mask_dtype)
    mask[0, :, :, :3] = torch.finfo(mask_dtype).min  # HF's "masked" value: left padding of 3
    mask[1, 1, 2, 5:] = float("-inf")
    mask = mask.cuda()
    out, _ = assert_matches_reference(q, k, v, log_gamma, attn_mask=mask)
    with_sinks = sink_attention(q, k, v, log_gamma, attn_mask=mask, sink_index=torch.tensor([3, 0], device="cuda"))
    torch.testing.assert_close(out, with_sinks)


@pytest.mark.parametrize(
    "mask_shape", [(23,), (9, 23), (1, 1, 9, 23), (2, 1, 1, 23), (1, 4, 9, 1)], ids=lambda s: "x".join(map(str, s))
)
def test_broadcast_masks(mask_shape):
    q, k, v, log_gamma = cuda_inputs(2, 4, 2, 9, 23, 32, seed=6)
    gen = torch.Generator().manual_seed(2)
    mask = (torch.rand(mask_shape, generator=gen) > 0.3).cuda()
    assert_matches_reference(q, k, v, log_gamma, attn_mask=mask, is_causal=True)


def test_fully_masked_rows_give_zeros_not_nan():
    q, k, v, log_gamma = cuda_inputs(2, 2, 2, 5, 8, 16)
    mask = torch.ones(2, 1, 5, 8, dtype=torch.bool, device="cuda")
    mask[0, :, 2] = False  # one query sees nothing
    mask[1] = False  # a whole batch row sees nothing: it has no sink either
    out, lse = assert_matches_reference(q, k, v, log_gamma, attn_mask=mask)
    assert torch.equal(out[0, :, 2], torch.zeros_like(out[0, :, 2]))
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.isneginf(lse[1]).all() and torch.isneginf(lse[0, :, 2]).all()


@pytest.mark.parametrize("path", ["split_kv", "flash_merge"])
def test_queries_before_any_key_give_zeros(path, force_path):
    force_path(path)
    q, k, v, log_gamma = cuda_inputs(1, 2, 2, 24, 3, 16, dtype=torch.bfloat16)
    out, lse = assert_matches_reference(q, k, v, log_gamma, is_causal=True)
    assert torch.equal(out[:, :, :21], torch.zeros_like(out[:, :, :21]))
    assert torch.isneginf(lse[:, :, :21]).all()


def test_explicit_sink_index_and_no_sink():
    q, k, v, log_gamma = cuda_inputs(3, 4, 4, 12, 12, 32, seed=7)
    sinks = torch.tensor([0, 5, -1], device="cuda")
    out, _ = assert_matches_reference(q, k, v, log_gamma, sink_index=sinks, is_causal=True)
    plain = sink_attention(q, k, v, torch.zeros(4, device="cuda"), is_causal=True)
    torch.testing.assert_close(out[2], plain[2])  # -1: this row is untouched
    torch.testing.assert_close(out[1, :, :5], plain[1, :, :5])  # queries before the sink cannot see it


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_softcap(dtype):
    q, k, v, log_gamma = cuda_inputs(1, 4, 2, 17, 40, 64, dtype=dtype, seed=8)
    assert_matches_reference(q * 4, k, v, log_gamma, is_causal=True, softcap=5.0)


@pytest.mark.parametrize("path", ["split_kv", "flash_merge"])
@pytest.mark.parametrize("lq, lk", [(40, 40), (1, 700), (9, 600), (300, 300)])
def test_sliding_window(lq, lk, path, force_path):
    force_path(path)
    q, k, v, log_gamma = cuda_inputs(2, 4, 2, lq, lk, 64, dtype=torch.bfloat16, seed=9)
    out, _ = assert_matches_reference(q, k, v, log_gamma, is_causal=True, sliding_window=13)
    if lq == 1:  # the sink is outside the window: no bias at all
        plain = sink_attention(q, k, v, torch.zeros(4, device="cuda"), is_causal=True, sliding_window=13)
        torch.testing.assert_close(out, plain)


def test_sliding_window_with_left_padding_mask():
    q, k, v, log_gamma = cuda_inputs(2, 4, 2, 40, 40, 32, seed=10)
    mask = padding_mask([40, 25], 40, 40).cuda()
    assert_matches_reference(q, k, v, log_gamma, attn_mask=mask, sliding_window=8)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_custom_scale_noncontiguous_and_misaligned_inputs(dtype):
    gen = torch.Generator().manual_seed(11)
    # HF layout: [B, L, H, D] viewed as [B, H, L, D].
    q = torch.randn(2, 30, 8, 64, generator=gen).to(dtype).cuda().transpose(1, 2)
    k = torch.randn(2, 30, 2, 64, generator=gen).to(dtype).cuda().transpose(1, 2)
    v = torch.randn(2, 30, 2, 64, generator=gen).to(dtype).cuda().transpose(1, 2)
    log_gamma = torch.linspace(-1, 1, 8, device="cuda")
    assert_matches_reference(q, k, v, log_gamma, is_causal=True, scale=0.3)
    expanded_k = torch.randn(2, 1, 1, 64, generator=gen).to(dtype).cuda().expand(2, 2, 30, 64)
    assert_matches_reference(q, expanded_k, v, log_gamma, is_causal=True)
    # Rows that start one element into their storage: no 16-byte loads are possible.
    storage = torch.randn(2 * 2 * 30 * 64 + 1, generator=gen).to(dtype).cuda()
    shifted_v = storage[1:].view(2, 2, 30, 64)
    assert path_of(q, k, shifted_v, log_gamma, is_causal=True) == "split_kv"
    assert_matches_reference(q, k, shifted_v, log_gamma, is_causal=True)


def test_empty_and_degenerate_sizes():
    q, k, v, log_gamma = cuda_inputs(1, 2, 2, 3, 0, 16)
    out, lse = sink_attention(q, k, v, log_gamma, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()
    q, k, v, log_gamma = cuda_inputs(0, 2, 2, 3, 4, 16)
    assert sink_attention(q, k, v, log_gamma).shape == (0, 2, 3, 16)


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


def test_opcheck():
    q, k, v, log_gamma = cuda_inputs(2, 4, 2, 24, 24, 16, dtype=torch.bfloat16)
    mask = padding_mask([24, 16], 24, 24).cuda()
    cases = [
        (q, k, v, log_gamma, None, None, True, None, None, None),
        (q, k, v, log_gamma, torch.tensor([0, 3], device="cuda"), mask, False, 0.2, 10.0, 4),
        (q.float(), k.float(), v.float(), log_gamma, None, mask, True, None, None, None),
    ]
    for args in cases:
        torch.library.opcheck(torch.ops.zerotuning.sink_attention.default, args)


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

