"""Gradients of torch.ops.zerotuning.sink_attention (q, k, v, log_gamma) on the CPU, against
autograd through the float64 reference, gradcheck, opcheck and torch.compile."""

import pytest
import torch
from op_support import CUDA_MARKS, make_inputs, padding_mask
from test_sink_attention import SHAPES

from zerotuning import sink_attention, sink_attention_reference
from zerotuning.reference import first_visible_keys, key_positions_visible, mask_visible_and_bias

BACKWARD_OP = torch.ops.zerotuning.sink_attention_backward.default


def random_cotangents(q, seed=0):
    """Gradients arriving at out and at the log-sum-exp (both are outputs of the op)."""
    gen = torch.Generator().manual_seed(seed)
    b, h, lq, d = q.shape
    return torch.randn(b, h, lq, d, generator=gen), torch.randn(b, h, lq, generator=gen)


def op_gradients(q, k, v, log_gamma, grad_out, grad_lse, **kwargs):
    inputs = [t.detach().clone().requires_grad_(True) for t in (q, k, v, log_gamma)]
    out, lse = sink_attention(*inputs, return_lse=True, **kwargs)
    finite = torch.isfinite(lse)  # -inf for queries that see no key: no gradient flows there
    loss = (out.float() * grad_out).sum() + (lse.masked_fill(~finite, 0.0) * grad_lse).sum()
    return torch.autograd.grad(loss, inputs)


def reference_gradients(q, k, v, log_gamma, grad_out, grad_lse, compute_dtype=torch.float64, **kwargs):
    inputs = [t.detach().to(compute_dtype).requires_grad_(True) for t in (q, k, v, log_gamma)]
    out, lse = sink_attention_reference(*inputs, compute_dtype=compute_dtype, **kwargs)
    finite = torch.isfinite(lse)
    loss = (out * grad_out.to(compute_dtype)).sum() + (lse.masked_fill(~finite, 0.0) * grad_lse.to(compute_dtype)).sum()
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]


def assert_gradients_match_reference(q, k, v, log_gamma, seed=0, **kwargs):
    grad_out, grad_lse = random_cotangents(q, seed)
    grads = op_gradients(q, k, v, log_gamma, grad_out, grad_lse, **kwargs)
    expected = reference_gradients(q, k, v, log_gamma, grad_out, grad_lse, **kwargs)
    if q.dtype != torch.float32:
        same_precision = reference_gradients(q, k, v, log_gamma, grad_out, grad_lse, compute_dtype=q.dtype, **kwargs)
    for name, got, want, i in zip(("q", "k", "v", "log_gamma"), grads, expected, range(4)):
        assert got.dtype == (q.dtype if i < 3 else torch.float32) and got.shape == want.shape, name
        assert torch.isfinite(got).all(), f"non-finite gradient for {name}"
        magnitude = max(want.abs().max().item(), 1.0)
        err = (got.double() - want).abs().max().item()
        if q.dtype == torch.float32:
            bound = 2e-5 * magnitude
        else:
            # As for the forward: twice the error of same-precision autograd, plus output rounding.
            peer_err = (same_precision[i].double() - want).abs().max().item()
            bound = 2.0 * peer_err + 2.0 * torch.finfo(q.dtype).eps * magnitude
        assert err <= bound, f"d{name}: error {err:.3g} exceeds {bound:.3g} ({q.dtype})"
    return grads


# ---- against the reference ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True])
def test_gradients_match_reference(shape, causal):
    q, k, v, log_gamma = make_inputs(*shape)
    assert_gradients_match_reference(q, k, v, log_gamma, is_causal=causal)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [(2, 8, 2, 1, 300, 64), (1, 8, 4, 37, 37, 128), (3, 4, 4, 33, 53, 64)])
def test_low_precision_gradients(shape, dtype):
    q, k, v, log_gamma = make_inputs(*shape, dtype=dtype)
    assert_gradients_match_reference(q, k, v, log_gamma, is_causal=True)


@pytest.mark.parametrize("d", [8, 64, 256])
def test_every_option_together(d):
    q, k, v, log_gamma = make_inputs(2, 4, 2, 21, 45, d, seed=d)
    mask = padding_mask([45, 30], 21, 45)
    assert_gradients_match_reference(
        q * 3, k, v, log_gamma, attn_mask=mask, is_causal=True, softcap=5.0, sliding_window=17, scale=0.2
    )


def test_left_padding_and_decode_with_padding():
    lengths = [50, 31, 1, 17]
    q, k, v, log_gamma = make_inputs(4, 4, 2, 50, 50, 32, seed=3)
    assert_gradients_match_reference(q, k, v, log_gamma, attn_mask=padding_mask(lengths, 50, 50))
    q, k, v, log_gamma = make_inputs(2, 8, 2, 1, 300, 64, seed=4)
    assert_gradients_match_reference(q, k, v, log_gamma, attn_mask=padding_mask([300, 120], 1, 300), is_causal=True)


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_additive_float_masks(mask_dtype):
    q, k, v, log_gamma = make_inputs(2, 4, 2, 9, 23, 32, seed=5)
    gen = torch.Generator().manual_seed(1)
    mask = torch.randn(2, 4, 9, 23, generator=gen).to(mask_dtype)
    mask[0, :, :, :3] = torch.finfo(mask_dtype).min
    mask[1, 1, 2, 5:] = float("-inf")
    assert_gradients_match_reference(q, k, v, log_gamma, attn_mask=mask)


@pytest.mark.parametrize("mask_shape", [(23,), (9, 23), (2, 1, 1, 23), (1, 4, 9, 1)], ids=lambda s: "x".join(map(str, s)))
def test_broadcast_bool_masks(mask_shape):
    q, k, v, log_gamma = make_inputs(2, 4, 2, 9, 23, 32, seed=6)
    mask = torch.rand(mask_shape, generator=torch.Generator().manual_seed(2)) > 0.3
    assert_gradients_match_reference(q, k, v, log_gamma, attn_mask=mask, is_causal=True)


def test_explicit_sinks_and_rows_without_one():
    q, k, v, log_gamma = make_inputs(3, 4, 4, 12, 12, 32, seed=7)
    grads = assert_gradients_match_reference(q, k, v, log_gamma, sink_index=torch.tensor([0, 5, -1]), is_causal=True)
    # Row 2 has no sink and row 1's sink (key 5) is hidden from its first five queries.
    only_row = assert_gradients_match_reference(
        q[2:], k[2:], v[2:], log_gamma, sink_index=torch.tensor([-1]), is_causal=True
    )
    assert torch.equal(only_row[3], torch.zeros(4))
    assert grads[3].abs().sum() > 0


@pytest.mark.parametrize("lq, lk", [(40, 40), (1, 700), (9, 600)])
def test_sliding_window(lq, lk):
    q, k, v, log_gamma = make_inputs(2, 4, 2, lq, lk, 64, seed=9)
    grads = assert_gradients_match_reference(q, k, v, log_gamma, is_causal=True, sliding_window=13)
    if lq == 1:  # the sink is outside every query's window: gamma cannot matter
        assert torch.equal(grads[3], torch.zeros(4))


def test_queries_that_see_no_key_get_zero_gradients():
    q, k, v, log_gamma = make_inputs(2, 2, 2, 5, 8, 16)
    mask = torch.ones(2, 1, 5, 8, dtype=torch.bool)
    mask[0, :, 2] = False
    mask[1] = False
    grads = assert_gradients_match_reference(q, k, v, log_gamma, attn_mask=mask)
    assert torch.equal(grads[0][0, :, 2], torch.zeros(2, 16)) and torch.equal(grads[0][1], torch.zeros(2, 5, 16))
    assert torch.equal(grads[1][1], torch.zeros(2, 8, 16)) and torch.equal(grads[2][1], torch.zeros(2, 8, 16))
    q, k, v, log_gamma = make_inputs(1, 2, 2, 6, 3, 16)  # causal, more queries than keys
    assert_gradients_match_reference(q, k, v, log_gamma, is_causal=True)


def test_noncontiguous_and_expanded_inputs():
    gen = torch.Generator().manual_seed(11)
    q = torch.randn(2, 30, 8, 64, generator=gen).transpose(1, 2)
    k = torch.randn(2, 30, 2, 64, generator=gen).transpose(1, 2)
    v = torch.randn(2, 30, 2, 64, generator=gen).transpose(1, 2)
    assert_gradients_match_reference(q, k, v, torch.linspace(-1, 1, 8), is_causal=True, scale=0.3)
    expanded_k = torch.randn(2, 1, 1, 64, generator=gen).expand(2, 2, 30, 64)
    assert_gradients_match_reference(q, expanded_k, v, torch.linspace(-1, 1, 8), is_causal=True)


@pytest.mark.parametrize("threads", [1, 3, 8])
@pytest.mark.parametrize("shape", [(1, 4, 1, 1, 1500, 64), (1, 2, 1, 300, 700, 32), (2, 8, 2, 37, 400, 16)])
def test_key_chunks_across_threads(threads, shape):
    """Fewer (batch row, kv head) pairs than threads: keys are split into chunks whose dQ parts
    are summed; the result must not depend on the thread count or the scheduling."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        q, k, v, log_gamma = make_inputs(*shape, seed=threads)
        mask = padding_mask([shape[4] - 200] + [shape[4]] * (shape[0] - 1), shape[3], shape[4])
        first = assert_gradients_match_reference(q, k, v, log_gamma, attn_mask=mask, is_causal=True)
        again = op_gradients(q, k, v, log_gamma, *random_cotangents(q), attn_mask=mask, is_causal=True)
        assert all(torch.equal(a, b) for a, b in zip(first, again)), "gradients are not deterministic"
        assert_gradients_match_reference(q, k, v, log_gamma, is_causal=True, sliding_window=150)
    finally:
        torch.set_num_threads(previous)


# ---- non-finite inputs ---------------------------------------------------------------------------


def gradients_keeping_nan(fn, inputs, grad_out, grad_lse, **kwargs):
    """Gradients of <out, grad_out> + <lse, grad_lse>, leaving out only rows whose lse is -inf
    (they see no key); NaN rows stay in, so their NaN must reach the gradients."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out, lse = fn(*leaves, **kwargs)
    lse = lse.masked_fill(lse == float("-inf"), 0.0)
    loss = (out * grad_out.to(out.dtype)).sum() + (lse * grad_lse.to(lse.dtype)).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves)]


NON_FINITE_BACKWARD_CASES = {
    "nan-q-row": lambda q, k, v, m: q[1, 2, 7].fill_(float("nan")),
    "inf-q-entry": lambda q, k, v, m: q[0, 1, 20, 3].fill_(float("inf")),
    "nan-sink-k": lambda q, k, v, m: k[0, 1, 4, 5].fill_(float("nan")),
    "nan-middle-k": lambda q, k, v, m: k[1, 0, 140, 2].fill_(float("nan")),
    "nan-middle-v": lambda q, k, v, m: v[1, 1, 31, 4].fill_(float("nan")),
    "nan-mask": lambda q, k, v, m: m[0, 0, 25, 10].fill_(float("nan")),
    "inf-mask": lambda q, k, v, m: m[1, 0, 3, 1].fill_(float("inf")),
}


def reached_by_bad_rows(q, k, log_gamma, out, mask, is_causal):
    """Which gradient entries a row with a NaN output reaches: its dq row, dk/dv of the keys it
    sees with a logit above -inf, dlog_gamma of its head when it sees its sink. Returns boolean
    masks shaped like the gradients of q, k, v, log_gamma (default scale, no softcap)."""
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    mask_visible, additive = mask_visible_and_bias(mask, (b, hq, lq, lk), q.device, torch.float64)
    visible = mask_visible & key_positions_visible(lq, lk, is_causal, None, q.device)
    kf = k.double().repeat_interleave(hq // hkv, dim=1)
    logits = q.double() @ kf.transpose(-1, -2) / d**0.5 + additive
    bad = torch.isnan(out).any(dim=-1)  # [B, Hq, Lq]
    weighs = visible & (logits != float("-inf")) & bad[..., None]
    seen = weighs.any(dim=2).view(b, hkv, hq // hkv, lk).any(dim=2)  # [B, Hkv, Lk]
    sinks = first_visible_keys(mask_visible)
    sees_sink = torch.stack([visible[i, :, :, sinks[i]] & bad[i] for i in range(b)]).any(dim=2).any(dim=0)
    keys = seen[..., None].expand(k.shape)
    return bad[..., None].expand(q.shape), keys, keys, sees_sink


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", NON_FINITE_BACKWARD_CASES)
def test_non_finite_inputs_give_nan_gradients_where_autograd_through_the_reference_does(case, causal):
    """Everything a row with a NaN output reaches (docs/operator.md section 5) has a NaN gradient
    exactly where autograd through the reference has one, never a zero. Elsewhere the
    reference's dense matmuls also spread 0 * NaN to keys and rows no bad row sees; that part is
    not specified, but the op must not invent a NaN there and must agree wherever both are finite."""
    q, k, v, log_gamma = make_inputs(2, 4, 2, 40, 150, 16, seed=3)  # two key blocks, GQA
    mask = torch.zeros(2, 1, 40, 150)
    mask[0, :, :, :4] = torch.finfo(torch.float32).min  # row 0 is left-padded: its sink is key 4
    NON_FINITE_BACKWARD_CASES[case](q, k, v, mask)
    grad_out, grad_lse = random_cotangents(q, seed=1)
    options = dict(attn_mask=mask, is_causal=causal)
    got = gradients_keeping_nan(
        lambda *t, **kw: sink_attention(*t, return_lse=True, **kw), (q, k, v, log_gamma), grad_out, grad_lse, **options
    )
    want = gradients_keeping_nan(
        sink_attention_reference, [t.double() for t in (q, k, v, log_gamma)], grad_out, grad_lse, **options
    )
    ref_out, _ = sink_attention_reference(q, k, v, log_gamma, **options)
    reached = reached_by_bad_rows(q, k, log_gamma, ref_out, mask, causal)
    assert reached[0].any(), "the case must give some row a NaN output"
    for name, g, w, zone in zip(("q", "k", "v", "log_gamma"), got, want, reached):
        g_nan, w_nan = torch.isnan(g), torch.isnan(w)
        assert torch.equal(g_nan[zone], w_nan[zone]), f"d{name}: NaN pattern differs where a bad row reaches"
        assert not (g_nan & ~w_nan).any(), f"d{name}: NaN where the reference has none"
        both = ~g_nan & ~w_nan
        assert torch.isfinite(g[both]).all(), f"d{name}: infinite gradient"
        if both.any():
            err = (g[both].double() - w[both]).abs().max().item()
            assert err <= 2e-5 * max(w[both].abs().max().item(), 1.0), f"d{name}: error {err:.3g}"
    assert torch.isnan(got[0][reached[0]]).all(), "a bad row's dq must be NaN"


def test_log_gamma_gradient_is_the_stated_formula():
    """dlog_gamma[h] = sum over rows and queries of p_qs <dO_q, v_s - O_q> (docs/method.md)."""
    q, k, v, log_gamma = make_inputs(2, 4, 2, 11, 11, 16, seed=12)
    sinks = torch.tensor([0, 3])
    grad_out, _ = random_cotangents(q, seed=1)
    lg = log_gamma.clone().requires_grad_(True)
    out = sink_attention(q, k, v, lg, sink_index=sinks, is_causal=True)
    (dlog_gamma,) = torch.autograd.grad((out * grad_out).sum(), lg)
    ref_out, lse = sink_attention_reference(q, k, v, log_gamma, sink_index=sinks, is_causal=True)
    kr, vr = (t.double().repeat_interleave(2, dim=1) for t in (k, v))  # [B, Hq, L, D]
    expected = torch.zeros(4, dtype=torch.float64)
    for b, s in enumerate(sinks.tolist()):
        sink_logit = (q[b].double() * kr[b, :, s, None, :]).sum(-1) * 16**-0.5 + log_gamma.double()[:, None]
        visible = torch.arange(11) >= s  # causal, Lq = Lk: query i sees key s when i >= s
        p_sink = torch.exp(sink_logit - lse[b]) * visible
        inner = (grad_out[b].double() * (vr[b, :, s, None, :] - ref_out[b])).sum(-1)  # <dO_q, v_s - O_q>
        expected += (p_sink * inner).sum(-1)
    torch.testing.assert_close(dlog_gamma.double(), expected, rtol=1e-4, atol=1e-5)


def test_only_log_gamma_requires_grad():
    q, k, v, log_gamma = make_inputs(2, 8, 2, 20, 20, 32, seed=13)
    grad_out, grad_lse = random_cotangents(q)
    lg = log_gamma.clone().requires_grad_(True)
    out = sink_attention(q, k, v, lg, is_causal=True)
    (alone,) = torch.autograd.grad((out * grad_out).sum(), lg)
    full = reference_gradients(q, k, v, log_gamma, grad_out, torch.zeros_like(grad_lse), is_causal=True)[3]
    torch.testing.assert_close(alone.double(), full, rtol=1e-4, atol=2e-5)


# ---- torch integration ----------------------------------------------------------------------------


def test_gradcheck():
    """Finite differences of the op itself. The kernels compute in float32 (no float64 kernel),
    so the step and tolerances are float32's; the float64 comparisons above are the tight check."""
    gen = torch.Generator().manual_seed(14)
    q = torch.randn(2, 4, 5, 8, generator=gen).requires_grad_(True)
    k = torch.randn(2, 2, 7, 8, generator=gen).requires_grad_(True)
    v = torch.randn(2, 2, 7, 8, generator=gen).requires_grad_(True)
    log_gamma = torch.tensor([0.5, -0.7, 1.2, 0.0]).requires_grad_(True)
    mask = padding_mask([7, 4], 5, 7, causal=False)  # every query sees a key: lse stays finite

    def attend(q, k, v, log_gamma):
        return sink_attention(q, k, v, log_gamma, attn_mask=mask, softcap=4.0, sliding_window=5, return_lse=True)

    with pytest.warns(UserWarning, match="double precision"):
        assert torch.autograd.gradcheck(attend, (q, k, v, log_gamma), eps=3e-3, atol=1e-3, rtol=1e-2)


def test_opcheck_with_autograd():
    q, k, v, log_gamma = make_inputs(2, 4, 2, 7, 9, 16)
    mask = padding_mask([9, 6], 7, 9)
    grad = [t.requires_grad_(True) for t in (q.clone(), k.clone(), v.clone(), log_gamma.clone())]
    cases = [
        (*grad, None, None, True, None, None, None),
        (*grad, torch.tensor([0, 3]), mask, False, 0.2, 10.0, 4),
        (q.bfloat16().requires_grad_(True), k.bfloat16(), v.bfloat16(), log_gamma.requires_grad_(True), None, mask, True, None, None, None),
    ]
    for args in cases:
        torch.library.opcheck(torch.ops.zerotuning.sink_attention.default, args)
    out, lse = torch.ops.zerotuning.sink_attention.default(q, k, v, log_gamma, None, mask, True, None, None, None)
    backward_args = (torch.randn_like(out), torch.randn_like(lse), q, k, v, log_gamma, out, lse, None, mask, True, None, None, None)
    torch.library.opcheck(BACKWARD_OP, [a.detach() if isinstance(a, torch.Tensor) else a for a in backward_args])


def test_torch_compile_backward():
    q, k, v, log_gamma = make_inputs(1, 4, 2, 8, 8, 16)
    grad_out, _ = random_cotangents(q)

    def loss(q, k, v, g):
        return (sink_attention(q, k, v, g, is_causal=True) * grad_out).sum()

    def gradients(fn):
        inputs = [t.clone().requires_grad_(True) for t in (q, k, v, log_gamma)]
        return torch.autograd.grad(fn(*inputs), inputs)

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    for got, want in zip(gradients(compiled), gradients(loss)):
        torch.testing.assert_close(got, want)


def test_mask_gradient_is_refused_clearly():
    q, k, v, log_gamma = make_inputs(1, 2, 2, 4, 4, 8)
    mask = torch.zeros(4, 4, requires_grad=True)
    with pytest.raises(NotImplementedError, match="attn_mask requires grad.*attn_mask.detach"):
        sink_attention(q.requires_grad_(True), k, v, log_gamma, attn_mask=mask)


def test_backward_op_checks_its_saved_tensors():
    q, k, v, log_gamma = make_inputs(2, 4, 2, 5, 6, 16)
    out, lse = torch.ops.zerotuning.sink_attention.default(q, k, v, log_gamma, None, None, False, None, None, None)
    good = dict(grad_out=torch.ones_like(out), grad_lse=None, q=q, k=k, v=v, log_gamma=log_gamma, out=out, lse=lse)
    bad = [
        (dict(grad_out=torch.ones(2, 4, 5, 8)), r"grad_out must have shape \[2, 4, 5, 16\], got \[2, 4, 5, 8\]"),
        (dict(lse=lse.double()), r"lse must be Float, got Double"),
        (dict(grad_lse=torch.ones(2, 4)), r"grad_lse must have shape \[2, 4, 5\], got \[2, 4\]"),
        (dict(out=out.half()), r"out must be Float, got Half"),
    ]
    for overrides, message in bad:
        args = {**good, **overrides}
        with pytest.raises(RuntimeError, match="zerotuning.sink_attention_backward: " + message):
            BACKWARD_OP(*args.values(), None, None, False, None, None, None)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA_MARKS)])
def test_cuda_backward_is_refused_naming_the_device(device):
    q, k, v, log_gamma = make_inputs(1, 2, 2, 4, 4, 8, device=device)
    out = sink_attention(q.requires_grad_(True), k, v, log_gamma)
    with pytest.raises(NotImplementedError, match="backward is implemented on the CPU only, got tensors on cuda"):
        out.sum().backward()
