"""torch.ops.zerotuning.sink_attention against the float64 reference, on the CPU."""

import math

import pytest
import torch
import torch.nn.functional as F

from zerotuning import sink_attention, sink_attention_reference

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def make_inputs(b, hq, hkv, lq, lk, d, dtype=torch.float32, seed=0, gamma_spread=1.0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, lq, d, generator=gen).to(dtype)
    k = torch.randn(b, hkv, lk, d, generator=gen).to(dtype)
    v = torch.randn(b, hkv, lk, d, generator=gen).to(dtype)
    # Mix of amplified, reduced and untouched heads, as ZeroTuning profiles have.
    log_gamma = (torch.rand(hq, generator=gen) * 2 - 1) * gamma_spread
    log_gamma[0] = 0.0
    return q, k, v, log_gamma


def padding_mask(lengths, lq, lk, causal=True):
    """HF-style [B, 1, Lq, Lk] bool mask for left-padded rows of the given real lengths."""
    b = len(lengths)
    keys = torch.arange(lk)
    pad = torch.tensor([lk - n for n in lengths])
    mask = (keys[None, :] >= pad[:, None])[:, None, None, :].expand(b, 1, lq, lk).clone()
    if causal:
        q_pos = torch.arange(lq)[:, None] + (lk - lq)
        mask &= keys[None, :] <= q_pos
    return mask


def assert_matches_reference(q, k, v, log_gamma, **kwargs):
    out, lse = sink_attention(q, k, v, log_gamma, return_lse=True, **kwargs)
    ref_out, ref_lse = sink_attention_reference(q, k, v, log_gamma, **kwargs)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:3]
    assert not torch.isnan(out).any()
    if q.dtype == torch.float32:
        torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    else:
        bound = low_precision_bound(q, k, v, log_gamma, ref_out, **kwargs)
        err = (out.double() - ref_out).abs().max().item()
        assert err <= bound, f"{q.dtype} error {err:.3g} exceeds bound {bound:.3g}"
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    torch.testing.assert_close(lse.double()[finite], ref_lse[finite], rtol=1e-5, atol=1e-4)
    return out, lse


def low_precision_bound(q, k, v, log_gamma, ref_out, **kwargs):
    """Twice the error of same-precision torch attention on the same problem, plus the rounding
    of the output itself: a kernel as accurate as SDPA passes, a wrong one does not."""
    same_precision = sink_attention_reference(q, k, v, log_gamma, compute_dtype=q.dtype, **kwargs)[0]
    sdpa_err = (same_precision.double() - ref_out).abs().max().item()
    out_ulp = torch.finfo(q.dtype).eps * ref_out.abs().max().item()
    return 2.0 * sdpa_err + 2.0 * out_ulp


# ---- shapes ---------------------------------------------------------------------------------

SHAPES = [
    # b, hq, hkv, lq, lk, d
    (1, 4, 4, 1, 700, 64),  # decode, long cache, MHA
    (2, 8, 2, 1, 1500, 64),  # decode, GQA 4, several key blocks
    (2, 8, 1, 1, 129, 80),  # decode, MQA (GQA 8)
    (1, 8, 4, 37, 37, 128),  # odd prefill, GQA 2
    (3, 4, 4, 33, 53, 64),  # chunked prefill: Lq < Lk
    (1, 16, 2, 70, 600, 64),  # GQA 8, multi-block keys
    (2, 2, 1, 19, 19, 256),  # largest head dim
    (1, 3, 3, 5, 7, 8),  # tiny head dim, odd heads
    (1, 2, 2, 1, 1, 64),  # a single key
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference(shape, dtype, causal):
    q, k, v, log_gamma = make_inputs(*shape, dtype=dtype)
    assert_matches_reference(q, k, v, log_gamma, is_causal=causal)


@pytest.mark.parametrize("d", [64, 80, 128, 256])
def test_head_dims_with_every_option(d):
    q, k, v, log_gamma = make_inputs(2, 4, 2, 21, 45, d, seed=d)
    mask = padding_mask([45, 30], 21, 45)
    assert_matches_reference(q, k, v, log_gamma, attn_mask=mask, is_causal=True, softcap=30.0, sliding_window=17)


def test_gamma_one_equals_sdpa():
    q, k, v, _ = make_inputs(2, 8, 2, 40, 40, 64)
    out = sink_attention(q, k, v, torch.zeros(8), is_causal=True)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_gamma_changes_sink_weight_as_method_states():
    """a_s' = gamma a_s / (1 + (gamma - 1) a_s): checked through the output with v = one-hot sink."""
    q, k, _, _ = make_inputs(1, 2, 2, 6, 6, 16)
    v = torch.zeros(1, 2, 6, 16)
    v[:, :, 0, 0] = 1.0  # out[..., 0] is then the sink's attention weight
    gamma = torch.tensor([3.0, 0.25])
    base = sink_attention(q, k, v, torch.zeros(2), is_causal=True)[..., 0]
    tuned = sink_attention(q, k, v, gamma.log(), is_causal=True)[..., 0]
    g = gamma[None, :, None]
    torch.testing.assert_close(tuned, g * base / (1 + (g - 1) * base), rtol=1e-5, atol=1e-6)


def test_query_seeing_only_the_sink_is_unchanged():
    q, k, v, _ = make_inputs(1, 2, 2, 4, 4, 16)
    big = torch.tensor([5.0, -5.0])
    out = sink_attention(q, k, v, big, is_causal=True)
    plain = sink_attention(q, k, v, torch.zeros(2), is_causal=True)
    torch.testing.assert_close(out[:, :, 0], plain[:, :, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[:, :, 0], v[:, :, 0], rtol=0, atol=1e-6)
    assert not torch.allclose(out[:, :, 1:], plain[:, :, 1:], atol=1e-3)


# ---- masks and sinks ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_left_padding_finds_each_rows_sink(dtype):
    lengths = [50, 31, 1, 17]
    lk = max(lengths)
    q, k, v, log_gamma = make_inputs(4, 4, 2, lk, lk, 64, dtype=dtype, seed=3)
    mask = padding_mask(lengths, lk, lk)
    out, _ = assert_matches_reference(q, k, v, log_gamma, attn_mask=mask)
    explicit = torch.tensor([lk - n for n in lengths])
    torch.testing.assert_close(out, sink_attention(q, k, v, log_gamma, attn_mask=mask, sink_index=explicit))
    # Each row equals the same sequence run alone, without padding.
    for b, n in enumerate(lengths):
        alone = sink_attention(
            q[b : b + 1, :, lk - n :], k[b : b + 1, :, lk - n :], v[b : b + 1, :, lk - n :], log_gamma, is_causal=True
        )
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(out[b : b + 1, :, lk - n :], alone, rtol=tol, atol=tol)


def test_decode_step_with_left_padding():
    lengths = [300, 120]
    lk = 300
    q, k, v, log_gamma = make_inputs(2, 8, 2, 1, lk, 64, seed=4)
    mask = padding_mask(lengths, 1, lk)
    assert_matches_reference(q, k, v, log_gamma, attn_mask=mask, is_causal=True)


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_additive_float_masks(mask_dtype):
    q, k, v, log_gamma = make_inputs(2, 4, 2, 9, 23, 32, seed=5)
    gen = torch.Generator().manual_seed(1)
    mask = torch.randn(2, 4, 9, 23, generator=gen).to(mask_dtype)
    mask[0, :, :, :3] = torch.finfo(mask_dtype).min  # HF's "masked" value: left padding of 3
    mask[1, 1, 2, 5:] = float("-inf")
    out, _ = assert_matches_reference(q, k, v, log_gamma, attn_mask=mask)
    with_sinks = sink_attention(q, k, v, log_gamma, attn_mask=mask, sink_index=torch.tensor([3, 0]))
    torch.testing.assert_close(out, with_sinks)


@pytest.mark.parametrize(
    "mask_shape", [(23,), (9, 23), (1, 1, 9, 23), (2, 1, 1, 23), (1, 4, 9, 1)], ids=lambda s: "x".join(map(str, s))
)
def test_broadcast_masks(mask_shape):
    q, k, v, log_gamma = make_inputs(2, 4, 2, 9, 23, 32, seed=6)
    gen = torch.Generator().manual_seed(2)
    mask = torch.rand(mask_shape, generator=gen) > 0.3
    assert_matches_reference(q, k, v, log_gamma, attn_mask=mask, is_causal=True)


def test_fully_masked_rows_give_zeros_not_nan():
    q, k, v, log_gamma = make_inputs(2, 2, 2, 5, 8, 16)
    mask = torch.ones(2, 1, 5, 8, dtype=torch.bool)
    mask[0, :, 2] = False  # one query sees nothing
    mask[1] = False  # a whole batch row sees nothing: it has no sink either
    out, lse = assert_matches_reference(q, k, v, log_gamma, attn_mask=mask)
    assert torch.equal(out[0, :, 2], torch.zeros_like(out[0, :, 2]))
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.isneginf(lse[1]).all() and torch.isneginf(lse[0, :, 2]).all()
    # Causal with more queries than keys: the first queries see no key.
    q2, k2, v2, lg2 = make_inputs(1, 2, 2, 6, 3, 16)
    out2, _ = assert_matches_reference(q2, k2, v2, lg2, is_causal=True)
    assert torch.equal(out2[:, :, :3], torch.zeros_like(out2[:, :, :3]))


def test_explicit_sink_index_and_no_sink():
    q, k, v, log_gamma = make_inputs(3, 4, 4, 12, 12, 32, seed=7)
    sinks = torch.tensor([0, 5, -1])
    out, _ = assert_matches_reference(q, k, v, log_gamma, sink_index=sinks, is_causal=True)
    plain = sink_attention(q, k, v, torch.zeros(4), is_causal=True)
    torch.testing.assert_close(out[2], plain[2])  # -1: this row is untouched
    torch.testing.assert_close(out[1, :, :5], plain[1, :, :5])  # queries before the sink cannot see it


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_softcap(dtype):
    q, k, v, log_gamma = make_inputs(1, 4, 2, 17, 40, 64, dtype=dtype, seed=8)
    q = q * 4  # large logits so the cap bites
    assert_matches_reference(q, k, v, log_gamma, is_causal=True, softcap=5.0)


@pytest.mark.parametrize("lq, lk", [(40, 40), (1, 700), (9, 600)])
def test_sliding_window(lq, lk):
    q, k, v, log_gamma = make_inputs(2, 4, 2, lq, lk, 64, seed=9)
    out, _ = assert_matches_reference(q, k, v, log_gamma, is_causal=True, sliding_window=13)
    if lq == 1:  # the sink is outside the window: no bias at all
        plain = sink_attention(q, k, v, torch.zeros(4), is_causal=True, sliding_window=13)
        torch.testing.assert_close(out, plain)


def test_sliding_window_with_left_padding_mask():
    lengths = [40, 25]
    q, k, v, log_gamma = make_inputs(2, 4, 2, 40, 40, 32, seed=10)
    assert_matches_reference(q, k, v, log_gamma, attn_mask=padding_mask(lengths, 40, 40), sliding_window=8)


def test_custom_scale_and_noncontiguous_inputs():
    gen = torch.Generator().manual_seed(11)
    # HF layout: [B, L, H, D] viewed as [B, H, L, D].
    q = torch.randn(2, 30, 8, 64, generator=gen).transpose(1, 2)
    k = torch.randn(2, 30, 2, 64, generator=gen).transpose(1, 2)
    v = torch.randn(2, 30, 2, 64, generator=gen).transpose(1, 2)
    expanded_k = torch.randn(2, 1, 1, 64, generator=gen).expand(2, 2, 30, 64)
    log_gamma = torch.linspace(-1, 1, 8)
    assert_matches_reference(q, k, v, log_gamma, is_causal=True, scale=0.3)
    assert_matches_reference(q, expanded_k, v, log_gamma, is_causal=True)
    # One key whose position stride is 0 and whose head_dim stride is irrelevant: still valid.
    one_key = torch.randn(128, generator=gen).as_strided((2, 2, 1, 64), (0, 64, 0, 1))
    one_value = torch.randn(2, 2, 1, 64, generator=gen)
    assert_matches_reference(q[:, :, -1:], one_key, one_value, log_gamma, is_causal=True)


def test_empty_and_degenerate_sizes():
    q, k, v, log_gamma = make_inputs(1, 2, 2, 3, 0, 16)
    out, lse = sink_attention(q, k, v, log_gamma, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()
    q, k, v, log_gamma = make_inputs(0, 2, 2, 3, 4, 16)
    assert sink_attention(q, k, v, log_gamma).shape == (0, 2, 3, 16)


# ---- torch integration ----------------------------------------------------------------------------


def test_opcheck():
    q, k, v, log_gamma = make_inputs(2, 4, 2, 7, 9, 16)
    mask = padding_mask([9, 6], 7, 9)
    cases = [
        (q, k, v, log_gamma, None, None, True, None, None, None),
        (q, k, v, log_gamma, torch.tensor([0, 3]), mask, False, 0.2, 10.0, 4),
        (q.bfloat16(), k.bfloat16(), v.bfloat16(), log_gamma, None, mask, True, None, None, None),
    ]
    for args in cases:
        torch.library.opcheck(torch.ops.zerotuning.sink_attention.default, args)


def test_torch_compile_traces_the_op():
    q, k, v, log_gamma = make_inputs(1, 4, 2, 8, 8, 16)

    def attend(q, k, v, g):
        return sink_attention(q, k, v, g, is_causal=True) * 2

    compiled = torch.compile(attend, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v, log_gamma), attend(q, k, v, log_gamma))


def test_backward_is_refused_clearly():
    q, k, v, log_gamma = make_inputs(1, 2, 2, 4, 4, 8)
    q.requires_grad_(True)
    out = sink_attention(q, k, v, log_gamma)
    with pytest.raises(NotImplementedError, match="inference operator"):
        out.sum().backward()


# ---- errors at the boundary -------------------------------------------------------------------------


def call_with(**overrides):
    q, k, v, log_gamma = make_inputs(2, 4, 2, 5, 6, 16)
    args = dict(q=q, k=k, v=v, log_gamma=log_gamma)
    args.update(overrides)
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
        (dict(q=torch.randn(1, 1, 1, 300), k=torch.randn(1, 1, 1, 300), v=torch.randn(1, 1, 1, 300), log_gamma=torch.zeros(1)), r"head_dim must be in \[1, 256\], got 300"),
    ],
)
def test_errors_name_the_argument(overrides, message):
    with pytest.raises(RuntimeError, match="zerotuning.sink_attention: " + message):
        call_with(**overrides)


def test_device_mismatch_is_refused():
    q, k, v, log_gamma = make_inputs(1, 2, 2, 3, 3, 8)
    with pytest.raises((RuntimeError, NotImplementedError), match="meta|device"):
        sink_attention(q, k, v, log_gamma.to("meta"))


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
