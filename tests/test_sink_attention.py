"""torch.ops.zerotuning.sink_attention against the float64 reference, on every target: the CPU
kernel and each CUDA path forced in turn (op_support.TARGETS). A CUDA target skips without a
GPU; a forced path skips the calls its rule does not serve, with the rule's reason. What only one
device has (CPU key splitting here; the CUDA path rule, device-side asserts and graph capture)
is tested in its own place: the end of this file, and tests/test_cuda_op.py."""

import math

import pytest
import torch
import torch.nn.functional as F
from op_support import DEVICES, DTYPES, PATH_VARIABLE, TARGETS, assert_matches_reference, make_inputs, padding_mask

from zerotuning import sink_attention


@pytest.fixture(params=TARGETS)
def target(request, monkeypatch):
    chosen = request.param
    if chosen.path is not None:
        monkeypatch.setenv(PATH_VARIABLE, chosen.path)
    return chosen


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


# ---- shapes ---------------------------------------------------------------------------------

SHAPES = [
    # b, hq, hkv, lq, lk, d
    (1, 4, 4, 1, 700, 64),  # decode, long cache, MHA
    (2, 8, 2, 1, 1500, 64),  # decode, GQA 4, several key blocks
    (2, 8, 1, 1, 129, 80),  # decode, MQA (GQA 8)
    (1, 32, 8, 1, 8192, 128),  # a long decode step at batch 1: many key splits
    (4, 4, 4, 1, 3000, 256),  # decode, largest head dim
    (1, 8, 4, 37, 37, 128),  # odd prefill, GQA 2
    (3, 4, 4, 33, 53, 64),  # chunked prefill: Lq < Lk
    (1, 4, 4, 40, 20, 64),  # more queries than keys: the first see none under causal
    (1, 16, 2, 70, 600, 64),  # GQA 8, multi-block keys
    (2, 8, 2, 300, 300, 128),  # a longer prefill
    (2, 2, 1, 19, 19, 256),  # largest head dim
    (1, 4, 2, 24, 24, 100),  # head dim not a multiple of 8
    (1, 3, 3, 5, 7, 8),  # tiny head dim, odd heads
    (1, 2, 2, 1, 1, 64),  # a single key
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference(target, shape, dtype, causal):
    q, k, v, log_gamma = target.inputs(*shape, dtype=dtype, seed=sum(shape))
    target.require(q, k, v, log_gamma, is_causal=causal)
    assert_matches_reference(q, k, v, log_gamma, is_causal=causal)


@pytest.mark.parametrize("d", [64, 80, 128, 256])
def test_head_dims_with_every_option(target, d):
    q, k, v, log_gamma = target.inputs(2, 4, 2, 21, 45, d, seed=d)
    options = dict(attn_mask=padding_mask([45, 30], 21, 45, device=target.device), is_causal=True, softcap=30.0,
                   sliding_window=17)
    target.require(q, k, v, log_gamma, **options)
    assert_matches_reference(q, k, v, log_gamma, **options)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gamma_one_equals_sdpa(target, dtype):
    q, k, v, _ = target.inputs(2, 8, 2, 64, 64, 64, dtype=dtype)
    neutral = torch.zeros(8, device=target.device)
    target.require(q, k, v, neutral, is_causal=True)
    out = sink_attention(q, k, v, neutral, is_causal=True)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_gamma_changes_sink_weight_as_method_states(target, dtype):
    """a_s' = gamma a_s / (1 + (gamma - 1) a_s): checked through the output with v = one-hot sink."""
    q, k, _, _ = target.inputs(1, 2, 2, 24, 24, 16, dtype=dtype)
    v = torch.zeros(1, 2, 24, 16, dtype=dtype, device=target.device)
    v[:, :, 0, 0] = 1.0  # out[..., 0] is then the sink's attention weight
    gamma = torch.tensor([3.0, 0.25], device=target.device)
    target.require(q, k, v, gamma.log(), is_causal=True)
    base = sink_attention(q, k, v, torch.zeros_like(gamma), is_causal=True)[..., 0].float()
    tuned = sink_attention(q, k, v, gamma.log(), is_causal=True)[..., 0].float()
    g = gamma[None, :, None]
    tol = 1e-5 if dtype == torch.float32 else 3e-3
    torch.testing.assert_close(tuned, g * base / (1 + (g - 1) * base), rtol=tol, atol=tol)


def test_query_seeing_only_the_sink_is_unchanged(target):
    q, k, v, _ = target.inputs(1, 2, 2, 4, 4, 16)
    big = torch.tensor([5.0, -5.0], device=target.device)
    target.require(q, k, v, big, is_causal=True)
    out = sink_attention(q, k, v, big, is_causal=True)
    plain = sink_attention(q, k, v, torch.zeros_like(big), is_causal=True)
    torch.testing.assert_close(out[:, :, 0], plain[:, :, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[:, :, 0], v[:, :, 0], rtol=0, atol=1e-6)
    assert not torch.allclose(out[:, :, 1:], plain[:, :, 1:], atol=1e-3)


# ---- masks and sinks ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_left_padding_finds_each_rows_sink(target, dtype):
    lengths = [50, 31, 1, 17]
    lk = max(lengths)
    q, k, v, log_gamma = target.inputs(4, 4, 2, lk, lk, 64, dtype=dtype, seed=3)
    mask = padding_mask(lengths, lk, lk, device=target.device)
    target.require(q, k, v, log_gamma, attn_mask=mask)
    out, _ = assert_matches_reference(q, k, v, log_gamma, attn_mask=mask)
    explicit = torch.tensor([lk - n for n in lengths], device=target.device)
    torch.testing.assert_close(out, sink_attention(q, k, v, log_gamma, attn_mask=mask, sink_index=explicit))
    # Each row equals the same sequence run alone, without padding.
    for b, n in enumerate(lengths):
        alone = sink_attention(
            q[b : b + 1, :, lk - n :], k[b : b + 1, :, lk - n :], v[b : b + 1, :, lk - n :], log_gamma, is_causal=True
        )
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(out[b : b + 1, :, lk - n :], alone, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_decode_step_with_left_padding(target, dtype):
    q, k, v, log_gamma = target.inputs(2, 8, 2, 1, 3000, 64, dtype=dtype, seed=4)
    mask = padding_mask([3000, 1200], 1, 3000, device=target.device)
    target.require(q, k, v, log_gamma, attn_mask=mask, is_causal=True)
    assert_matches_reference(q, k, v, log_gamma, attn_mask=mask, is_causal=True)


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_additive_float_masks(target, mask_dtype):
    q, k, v, log_gamma = target.inputs(2, 4, 2, 9, 23, 32, seed=5)
    gen = torch.Generator().manual_seed(1)
    mask = torch.randn(2, 4, 9, 23, generator=gen).to(mask_dtype)
    mask[0, :, :, :3] = torch.finfo(mask_dtype).min  # HF's "masked" value: left padding of 3
    mask[1, 1, 2, 5:] = float("-inf")
    mask = mask.to(target.device)
    target.require(q, k, v, log_gamma, attn_mask=mask)
    out, _ = assert_matches_reference(q, k, v, log_gamma, attn_mask=mask)
    sinks = torch.tensor([3, 0], device=target.device)
    torch.testing.assert_close(out, sink_attention(q, k, v, log_gamma, attn_mask=mask, sink_index=sinks))


@pytest.mark.parametrize(
    "mask_shape", [(23,), (9, 23), (1, 1, 9, 23), (2, 1, 1, 23), (1, 4, 9, 1)], ids=lambda s: "x".join(map(str, s))
)
def test_broadcast_masks(target, mask_shape):
    q, k, v, log_gamma = target.inputs(2, 4, 2, 9, 23, 32, seed=6)
    gen = torch.Generator().manual_seed(2)
    mask = (torch.rand(mask_shape, generator=gen) > 0.3).to(target.device)
    target.require(q, k, v, log_gamma, attn_mask=mask, is_causal=True)
    assert_matches_reference(q, k, v, log_gamma, attn_mask=mask, is_causal=True)


def test_fully_masked_rows_give_zeros_not_nan(target):
    q, k, v, log_gamma = target.inputs(2, 2, 2, 5, 8, 16)
    mask = torch.ones(2, 1, 5, 8, dtype=torch.bool, device=target.device)
    mask[0, :, 2] = False  # one query sees nothing
    mask[1] = False  # a whole batch row sees nothing: it has no sink either
    target.require(q, k, v, log_gamma, attn_mask=mask)
    out, lse = assert_matches_reference(q, k, v, log_gamma, attn_mask=mask)
    assert torch.equal(out[0, :, 2], torch.zeros_like(out[0, :, 2]))
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.isneginf(lse[1]).all() and torch.isneginf(lse[0, :, 2]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_queries_before_any_key_give_zeros(target, dtype):
    """Causal with more queries than keys: the first queries see no key."""
    q, k, v, log_gamma = target.inputs(1, 2, 2, 24, 3, 16, dtype=dtype)
    target.require(q, k, v, log_gamma, is_causal=True)
    out, lse = assert_matches_reference(q, k, v, log_gamma, is_causal=True)
    assert torch.equal(out[:, :, :21], torch.zeros_like(out[:, :, :21]))
    assert torch.isneginf(lse[:, :, :21]).all()


def test_explicit_sink_index_and_no_sink(target):
    q, k, v, log_gamma = target.inputs(3, 4, 4, 12, 12, 32, seed=7)
    sinks = torch.tensor([0, 5, -1], device=target.device)
    target.require(q, k, v, log_gamma, sink_index=sinks, is_causal=True)
    out, _ = assert_matches_reference(q, k, v, log_gamma, sink_index=sinks, is_causal=True)
    plain = sink_attention(q, k, v, torch.zeros_like(log_gamma), is_causal=True)
    torch.testing.assert_close(out[2], plain[2])  # -1: this row is untouched
    torch.testing.assert_close(out[1, :, :5], plain[1, :, :5])  # queries before the sink cannot see it


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_softcap(target, dtype):
    q, k, v, log_gamma = target.inputs(1, 4, 2, 17, 40, 64, dtype=dtype, seed=8)
    q = q * 4  # large logits so the cap bites
    target.require(q, k, v, log_gamma, is_causal=True, softcap=5.0)
    assert_matches_reference(q, k, v, log_gamma, is_causal=True, softcap=5.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("lq, lk", [(40, 40), (1, 700), (9, 600), (300, 300)])
def test_sliding_window(target, lq, lk, dtype):
    q, k, v, log_gamma = target.inputs(2, 4, 2, lq, lk, 64, dtype=dtype, seed=9)
    target.require(q, k, v, log_gamma, is_causal=True, sliding_window=13)
    out, _ = assert_matches_reference(q, k, v, log_gamma, is_causal=True, sliding_window=13)
    if lq == 1:  # the sink is outside the window: no bias at all
        plain = sink_attention(q, k, v, torch.zeros_like(log_gamma), is_causal=True, sliding_window=13)
        torch.testing.assert_close(out, plain)


def test_sliding_window_with_left_padding_mask(target):
    q, k, v, log_gamma = target.inputs(2, 4, 2, 40, 40, 32, seed=10)
    mask = padding_mask([40, 25], 40, 40, device=target.device)
    target.require(q, k, v, log_gamma, attn_mask=mask, sliding_window=8)
    assert_matches_reference(q, k, v, log_gamma, attn_mask=mask, sliding_window=8)


def strided_inputs(layout, dtype, device):
    """q, k, v, log_gamma, scale for one memory layout the op must read correctly."""
    gen = torch.Generator().manual_seed(11)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dtype).to(device)

    # HF layout: [B, L, H, D] viewed as [B, H, L, D].
    q, k, v = (randn(2, 30, heads, 64).transpose(1, 2) for heads in (8, 2, 2))
    log_gamma = torch.linspace(-1, 1, 8, device=device)
    if layout == "hf_transposed":
        return q, k, v, log_gamma, 0.3
    if layout == "expanded_k":  # stride 0 over heads and positions
        return q, randn(2, 1, 1, 64).expand(2, 2, 30, 64), v, log_gamma, None
    if layout == "one_key_zero_strides":  # one key whose position stride is 0 and batch stride 0
        return q[:, :, -1:], randn(128).as_strided((2, 2, 1, 64), (0, 64, 0, 1)), randn(2, 2, 1, 64), log_gamma, None
    # Rows that start one element into their storage: no 16-byte loads are possible.
    return q, k, randn(2 * 2 * 30 * 64 + 1)[1:].view(2, 2, 30, 64), log_gamma, None


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["hf_transposed", "expanded_k", "one_key_zero_strides", "misaligned_v"])
def test_custom_scale_and_noncontiguous_inputs(target, layout, dtype):
    q, k, v, log_gamma, scale = strided_inputs(layout, dtype, target.device)
    target.require(q, k, v, log_gamma, is_causal=True, scale=scale)
    assert_matches_reference(q, k, v, log_gamma, is_causal=True, scale=scale)


def test_empty_and_degenerate_sizes(target):
    q, k, v, log_gamma = target.inputs(1, 2, 2, 3, 0, 16)
    target.require(q, k, v, log_gamma)
    out, lse = sink_attention(q, k, v, log_gamma, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()
    q, k, v, log_gamma = target.inputs(0, 2, 2, 3, 4, 16)
    target.require(q, k, v, log_gamma)
    assert sink_attention(q, k, v, log_gamma).shape == (0, 2, 3, 16)


# ---- non-finite inputs and extreme arguments (docs/operator.md) -----------------------------------

NON_FINITE = [pytest.param(math.nan, id="nan"), pytest.param(math.inf, id="inf"), pytest.param(-math.inf, id="-inf")]
# Where one non-finite element goes: q of one query row; k of the sink or of a middle key (seen
# by the later queries only, under is_causal); v of the sink (seen by every query) or of a middle
# key without is_causal (a v entry of a key a query does not weigh is not specified).
PLACES = {
    "q": ("q", (0, 1, 5, 3)),
    "k_sink": ("k", (0, 1, 0, 2)),
    "k_middle": ("k", (1, 0, 7, 2)),
    "v_sink": ("v", (0, 0, 0, 4)),
    "v_middle": ("v", (1, 1, 7, 5)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_inputs_propagate_as_the_reference_says(target, value, place, causal, dtype):
    if place == "v_middle" and causal:
        pytest.skip("under is_causal the earlier queries do not weigh the middle key: not specified")
    q, k, v, log_gamma = target.inputs(2, 4, 2, 24, 24, 64, dtype=dtype, seed=12)
    name, index = PLACES[place]
    tensors = dict(q=q, k=k, v=v)
    tensors[name][index] = value
    target.require(q, k, v, log_gamma, is_causal=causal)
    out, lse = assert_matches_reference(q, k, v, log_gamma, is_causal=causal)
    if name != "v" or not math.isinf(value):  # NaN anywhere, and inf in q or k: some rows are NaN
        assert out.isnan().any()
    if name == "v":
        assert torch.isfinite(lse).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_non_finite_inputs_with_softcap_mask_window_and_key_splits(target, dtype):
    """The same rule on the kernels' other branches: softcap (tanh caps inf, not NaN), a padding
    mask, a window, and a long decode whose keys are split across threads or blocks."""
    q, k, v, log_gamma = target.inputs(2, 8, 2, 1, 3000, 64, dtype=dtype, seed=13)
    k[0, 0, 2500, 1] = math.nan  # seen by the decode step of row 0, heads 0-3
    q[1, 5, 0, 0] = math.inf  # with softcap: finite capped logits
    mask = padding_mask([3000, 2000], 1, 3000, device=target.device)
    options = dict(attn_mask=mask, is_causal=True, softcap=30.0, sliding_window=2800)
    target.require(q, k, v, log_gamma, **options)
    out, _ = assert_matches_reference(q, k, v, log_gamma, **options)
    assert out[0, :4].isnan().all() and torch.isfinite(out[0, 4:]).all() and torch.isfinite(out[1]).all()
    no_cap = dict(options, softcap=None)
    target.require(q, k, v, log_gamma, **no_cap)
    out, _ = assert_matches_reference(q, k, v, log_gamma, **no_cap)
    assert out[1, 5].isnan().all()


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_non_finite_additive_mask_values(target, mask_dtype):
    """NaN and +inf in an additive mask are additive values (they poison the rows that see them);
    -inf, like the dtype's lowest value, hides the key."""
    q, k, v, log_gamma = target.inputs(2, 4, 2, 9, 23, 32, seed=14)
    mask = torch.zeros(2, 4, 9, 23).to(mask_dtype)
    mask[0, 1, 3, 5] = math.nan
    mask[1, :, 2, 4] = math.inf
    mask[0, :, :, 0] = math.nan  # NaN does not hide the first key: it is still row 0's sink
    mask[1, :, :, :2] = -math.inf
    mask = mask.to(target.device)
    target.require(q, k, v, log_gamma, attn_mask=mask)
    out, lse = assert_matches_reference(q, k, v, log_gamma, attn_mask=mask)
    assert out[0].isnan().all() and lse[0].isnan().all()
    assert out[1, :, 2].isnan().all() and torch.isfinite(out[1, :, :2]).all() and torch.isfinite(out[1, :, 3:]).all()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lq, lk", [(9, 600), (600, 600), (1, 1500)])
def test_huge_sliding_window_is_no_window(target, lq, lk, causal):
    import sys

    q, k, v, log_gamma = target.inputs(1, 4, 2, lq, lk, 64, dtype=torch.bfloat16, seed=15)
    target.require(q, k, v, log_gamma, is_causal=causal, sliding_window=sys.maxsize)
    unbounded = sink_attention(q, k, v, log_gamma, is_causal=causal)
    for window in (sys.maxsize, sys.maxsize - 1, 2**40, lk + lq, lk):
        out, _ = assert_matches_reference(q, k, v, log_gamma, is_causal=causal, sliding_window=window)
        torch.testing.assert_close(out, unbounded, rtol=2e-2, atol=2e-2)


# ---- torch integration ----------------------------------------------------------------------------


def test_opcheck(device):
    q, k, v, log_gamma = make_inputs(2, 4, 2, 24, 24, 16, device=device)
    mask = padding_mask([24, 16], 24, 24, device=device)
    cases = [
        (q, k, v, log_gamma, None, None, True, None, None, None),
        (q, k, v, log_gamma, torch.tensor([0, 3], device=device), mask, False, 0.2, 10.0, 4),
        (q.bfloat16(), k.bfloat16(), v.bfloat16(), log_gamma, None, mask, True, None, None, None),
        (q.bfloat16(), k.bfloat16(), v.bfloat16(), log_gamma, None, None, True, None, None, None),
    ]
    for args in cases:
        torch.library.opcheck(torch.ops.zerotuning.sink_attention.default, args)


def test_torch_compile_traces_the_op(device):
    q, k, v, log_gamma = make_inputs(1, 4, 2, 8, 8, 16, device=device)

    def attend(q, k, v, g):
        return sink_attention(q, k, v, g, is_causal=True) * 2

    compiled = torch.compile(attend, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v, log_gamma), attend(q, k, v, log_gamma))


# ---- errors at the boundary -------------------------------------------------------------------------

# Value checks of tensor contents; on CUDA they are device-side asserts (tests/test_cuda_op.py).
CONTENT_CHECKS = ("log_gamma must be finite", "sink_index values")


def call_with(device, **overrides):
    q, k, v, log_gamma = make_inputs(2, 4, 2, 5, 6, 16)
    args = dict(q=q, k=k, v=v, log_gamma=log_gamma)
    args.update(overrides)
    args = {name: value.to(device) if isinstance(value, torch.Tensor) else value for name, value in args.items()}
    return sink_attention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("log_gamma"), **args)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(q=torch.randn(4, 5, 16)), r"q must be a 4-D tensor \[batch, heads_q, len_q, head_dim\], got shape \[4, 5, 16\]"),
        (dict(k=torch.randn(2, 3, 6, 16), v=torch.randn(2, 3, 6, 16)), r"heads_q \(4, q.size\(1\)\) must be a multiple of heads_kv \(3"),
        (dict(k=torch.randn(3, 2, 6, 16), v=torch.randn(3, 2, 6, 16)), r"k has batch size 3 but q has 2"),
        (dict(v=torch.randn(2, 2, 7, 16)), r"v must have the shape of k \[2, 2, 6, 16\], got \[2, 2, 7, 16\]"),
        (dict(k=torch.randn(2, 2, 6, 8), v=torch.randn(2, 2, 6, 8)), r"k has head_dim 8 but q has 16"),
        (dict(q=torch.randn(2, 4, 5, 16).double()), r"q must be float32, float16 or bfloat16, got Double"),
        (dict(k=torch.randn(2, 2, 6, 16).half()), r"q, k and v must share one dtype, got q Float, k Half, v Float"),
        (dict(log_gamma=torch.zeros(3)), r"log_gamma must have shape \[heads_q\] = \[4\], got \[3\]"),
        (dict(log_gamma=torch.zeros(4, dtype=torch.float64)), r"log_gamma must be float32, got Double"),
        (dict(log_gamma=torch.tensor([0.0, math.inf, 0.0, 0.0])), r"log_gamma must be finite \(log of a gamma > 0\), got inf for head 1"),
        (dict(log_gamma=torch.tensor([0.0, math.nan, 0.0, 0.0])), r"log_gamma must be finite"),
        (dict(sink_index=torch.tensor([0, 6])), r"sink_index values must be in \[-1, len_k\) = \[-1, 6\) \(-1 = no sink in that row\), got 6 for batch row 1"),
        (dict(sink_index=torch.tensor([-2, 0])), r"sink_index values must be in \[-1, len_k\)"),
        (dict(sink_index=torch.tensor([0])), r"sink_index must have shape \[batch\] = \[2\], got \[1\]"),
        (dict(sink_index=torch.tensor([0, 1], dtype=torch.int32)), r"sink_index must be int64, got Int"),
        (dict(attn_mask=torch.ones(2, 1, 5, 7, dtype=torch.bool)), r"attn_mask of shape \[2, 1, 5, 7\] does not broadcast to \[batch, heads_q, len_q, len_k\] = \[2, 4, 5, 6\]"),
        (dict(attn_mask=torch.ones(1, 2, 4, 5, 6, dtype=torch.bool)), r"attn_mask of shape \[1, 2, 4, 5, 6\] does not broadcast"),
        (dict(attn_mask=torch.ones(5, 6, dtype=torch.int64)), r"attn_mask must be bool \(True = attend\) or float32/float16/bfloat16 \(additive\), got Long"),
        (dict(softcap=0.0), r"softcap must be a finite number > 0 \(or None for no capping\), got 0"),
        (dict(sliding_window=0), r"sliding_window must be >= 1 \(or None for no window\), got 0"),
        (dict(scale=math.inf), r"scale must be finite, got inf"),
        (dict(scale=math.nan), r"scale must be finite, got nan"),
        (dict(scale=1e39), r"scale must be finite in float32 \(\|scale\| <= 3.40282e\+38\), got 1e\+39"),
        (dict(softcap=math.nan), r"softcap must be a finite number > 0"),
        (dict(softcap=math.inf), r"softcap must be a finite number > 0"),
        (dict(softcap=1e-50), r"softcap must be in float32's normal range \[1.17549e-38, 3.40282e\+38\], got 1e-50"),
        (dict(softcap=1e-39), r"softcap must be in float32's normal range"),
        (dict(softcap=1e39), r"softcap must be in float32's normal range"),
        (dict(sliding_window=-(2**62)), r"sliding_window must be >= 1 \(or None for no window\), got -4611686018427387904"),
        (dict(q=torch.randn(1, 1, 1, 300), k=torch.randn(1, 1, 1, 300), v=torch.randn(1, 1, 1, 300), log_gamma=torch.zeros(1)), r"head_dim must be in \[1, 256\], got 300"),
    ],
)
def test_errors_name_the_argument(device, overrides, message):
    if device == "cuda" and message.startswith(CONTENT_CHECKS):
        pytest.skip("checked by a device-side assert on CUDA (tests/test_cuda_op.py)")
    with pytest.raises(RuntimeError, match="zerotuning.sink_attention: " + message):
        call_with(device, **overrides)


def test_device_mismatch_is_refused():
    q, k, v, log_gamma = make_inputs(1, 2, 2, 3, 3, 8)
    with pytest.raises((RuntimeError, NotImplementedError), match="meta|device"):
        sink_attention(q, k, v, log_gamma.to("meta"))


# ---- CPU only: the kernel's thread split ----------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("shape", [(1, 4, 1, 1, 1500, 64), (2, 8, 2, 1, 1100, 80), (1, 2, 1, 3, 2000, 32)])
def test_key_splitting_across_threads(threads, shape):
    """Few work items and many threads: the keys are split and the partial softmaxes merged."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        q, k, v, log_gamma = make_inputs(*shape, seed=threads)
        mask = padding_mask([shape[4] - 600] + [shape[4]] * (shape[0] - 1), shape[3], shape[4])
        assert_matches_reference(q, k, v, log_gamma, attn_mask=mask, is_causal=True)
        assert_matches_reference(q, k, v, log_gamma, is_causal=True, sliding_window=700)
    finally:
        torch.set_num_threads(previous)
