"""What the operator tests share: inputs, the comparison with the float64 reference, and the
targets a call can run on (the CPU kernel, each CUDA path forced in turn)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from zerotuning import sink_attention, sink_attention_reference

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
PATH_VARIABLE = "ZEROTUNING_CUDA_PATH"
HAS_CUDA = torch.cuda.is_available()
CUDA_MARKS = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)"),
]


def make_inputs(b, hq, hkv, lq, lk, d, dtype=torch.float32, seed=0, gamma_spread=1.0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, lq, d, generator=gen).to(dtype)
    k = torch.randn(b, hkv, lk, d, generator=gen).to(dtype)
    v = torch.randn(b, hkv, lk, d, generator=gen).to(dtype)
    # Mix of amplified, reduced and untouched heads, as ZeroTuning profiles have.
    log_gamma = (torch.rand(hq, generator=gen) * 2 - 1) * gamma_spread
    log_gamma[0] = 0.0
    return [t.to(device) for t in (q, k, v, log_gamma)]


def padding_mask(lengths, lq, lk, causal=True, device="cpu"):
    """HF-style [B, 1, Lq, Lk] bool mask for left-padded rows of the given real lengths."""
    b = len(lengths)
    keys = torch.arange(lk)
    pad = torch.tensor([lk - n for n in lengths])
    mask = (keys[None, :] >= pad[:, None])[:, None, None, :].expand(b, 1, lq, lk).clone()
    if causal:
        q_pos = torch.arange(lq)[:, None] + (lk - lq)
        mask &= keys[None, :] <= q_pos
    return mask.to(device)


def assert_matches_reference(q, k, v, log_gamma, **kwargs):
    """The op equals the float64 reference: exactly where the reference is NaN or infinite
    (non-finite inputs propagate the same way), within tolerance everywhere else."""
    out, lse = sink_attention(q, k, v, log_gamma, return_lse=True, **kwargs)
    ref_out, ref_lse = sink_attention_reference(q, k, v, log_gamma, **kwargs)
    assert out.dtype == q.dtype and out.shape == q.shape and out.device == q.device
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:3]
    for got, want, name in ((out, ref_out, "out"), (lse, ref_lse, "lse")):
        special = ~torch.isfinite(want)
        torch.testing.assert_close(got.double()[special], want[special], rtol=0, atol=0, equal_nan=True,
                                   msg=lambda m: f"{name} where the reference is NaN or infinite: {m}")
        assert torch.isfinite(got[~special]).all(), f"{name} is NaN or infinite where the reference is finite"
    finite_out = torch.isfinite(ref_out)
    if q.dtype == torch.float32:
        torch.testing.assert_close(out.double()[finite_out], ref_out[finite_out], rtol=1e-5, atol=1e-5)
    elif finite_out.any():
        bound = low_precision_bound(q, k, v, log_gamma, ref_out, **kwargs)
        err = (out.double() - ref_out)[finite_out].abs().max().item()
        assert err <= bound, f"{q.dtype} error {err:.3g} exceeds bound {bound:.3g}"
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse.double()[finite], ref_lse[finite], rtol=1e-5, atol=1e-4)
    return out, lse


def low_precision_bound(q, k, v, log_gamma, ref_out, **kwargs):
    """Twice the error of same-precision torch attention on the same problem, plus the rounding
    of the output itself: a kernel as accurate as SDPA passes, a wrong one does not."""
    same_precision = sink_attention_reference(q, k, v, log_gamma, compute_dtype=q.dtype, **kwargs)[0]
    finite = torch.isfinite(ref_out) & torch.isfinite(same_precision)
    sdpa_err = (same_precision.double() - ref_out)[finite].abs().max().item()
    out_ulp = torch.finfo(q.dtype).eps * ref_out[finite].abs().max().item()
    return 2.0 * sdpa_err + 2.0 * out_ulp


# ---- CUDA paths ----------------------------------------------------------------------------------


def path_of(q, k, v, log_gamma, **options) -> str:
    """The CUDA path the op takes for this call (ZEROTUNING_CUDA_PATH applies)."""
    return torch.ops.zerotuning.sink_attention_cuda_path(
        q, k, v, log_gamma, options.get("sink_index"), options.get("attn_mask"), options.get("is_causal", False),
        options.get("scale"), options.get("softcap"), options.get("sliding_window"),
    )


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


@dataclass(frozen=True)
class Target:
    """Where a test's calls run: the CPU kernel, or one CUDA path forced through PATH_VARIABLE."""

    device: str
    path: str | None = None

    def inputs(self, *shape, dtype=torch.float32, seed=0):
        return make_inputs(*shape, dtype=dtype, seed=seed, device=self.device)

    def require(self, q, k, v, log_gamma, **options):
        """Skips the test when the forced CUDA path cannot serve this call (the path rule's
        reason is the skip reason); on the CPU every call is served."""
        if self.path is None:
            return
        try:
            taken = path_of(q, k, v, log_gamma, **options)
        except RuntimeError as error:
            if "cannot take that path" not in str(error):
                raise
            pytest.skip(str(error).split("cannot take that path: ")[-1].splitlines()[0])
        assert taken == self.path
        if self.path == "cudnn_merge" and not cudnn_attention_can_serve_rest(q, k, v, options.get("is_causal", False)):
            pytest.skip(f"this torch's cuDNN attention cannot run {tuple(q.shape)} x {tuple(k.shape)} {q.dtype} "
                        f"(torch's SDPA would not use it either)")


CUDA_PATHS = ["split_kv", "flash_merge", "cudnn_merge"]
TARGETS = [pytest.param(Target("cpu"), id="cpu")] + [
    pytest.param(Target("cuda", path), id=f"cuda-{path}", marks=CUDA_MARKS) for path in CUDA_PATHS
]
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=CUDA_MARKS)]
