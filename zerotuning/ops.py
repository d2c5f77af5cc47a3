"""Python entry point of the sink-attention operator and its torch.library registrations."""

from __future__ import annotations

import torch

from . import _C  # noqa: F401  (loading the library registers torch.ops.zerotuning)

# The op and the guard that skips its Python autograd kernel without grad mode (sink_attention_op,
# and the transformers backend's inline inference path).
SINK_ATTENTION_OP = torch.ops.zerotuning.sink_attention.default
BELOW_AUTOGRAD = torch._C._AutoDispatchBelowAutograd


def sink_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_gamma: torch.Tensor,
    *,
    sink_index: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    softcap: float | None = None,
    sliding_window: int | None = None,
    return_lse: bool = False,
):
    """Attention with ``log_gamma[h]`` added to the logit of each row's sink key.

    q [B, Hq, Lq, D]; k, v [B, Hkv, Lk, D] with Hq a multiple of Hkv; log_gamma [Hq] float32
    (0 leaves a head untouched). ``sink_index`` [B] int64 (-1: no sink in that row), or None
    for the first key ``attn_mask`` leaves visible in the row (its left-padding length).
    ``attn_mask``: bool (True = attend) or additive float, broadcastable to [B, Hq, Lq, Lk].
    ``is_causal`` aligns the diagonal to the end of the keys (KV-cache decoding). ``softcap``
    applies ``softcap * tanh(s / softcap)`` before the bias; ``sliding_window`` W lets the query
    at position p see keys j > p - W. Returns out [B, Hq, Lq, D] (and the float32 log-sum-exp
    [B, Hq, Lq] if ``return_lse``). Full semantics: ``zerotuning.reference``.
    """
    out, lse = sink_attention_op(q, k, v, log_gamma, sink_index, attn_mask, is_causal, scale, softcap, sliding_window)
    return (out, lse) if return_lse else out


def sink_attention_op(q, k, v, log_gamma, sink_index, attn_mask, is_causal, scale, softcap, sliding_window):
    """The op with every argument positional: ``(out, lse)``. What ``sink_attention`` and the
    transformers backend call (once per layer and decoding step: no keyword repacking)."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return SINK_ATTENTION_OP(q, k, v, log_gamma, sink_index, attn_mask, is_causal, scale, softcap, sliding_window)
    # Without grad mode, the autograd kernel of an op registered from Python only redispatches
    # below itself, but through Python: a fifth of a decoding step's attention call
    # (docs/hf_integration.md, "Model-level cost"). Going below autograd here is the same dispatch
    # without that detour. (Compiled graphs keep the plain call, which dynamo traces.)
    with BELOW_AUTOGRAD():
        return SINK_ATTENTION_OP(q, k, v, log_gamma, sink_index, attn_mask, is_causal, scale, softcap, sliding_window)


def cpu_isa() -> str:
    """The vector instruction set the CPU kernel was compiled for."""
    return torch.ops.zerotuning.cpu_isa()


@torch.library.register_fake("zerotuning::sink_attention")
def _sink_attention_fake(
    q, k, v, log_gamma, sink_index=None, attn_mask=None, is_causal=False, scale=None, softcap=None, sliding_window=None
):
    # Shapes are checked by the real kernels; devices are checked here too because a mix of
    # devices that includes "meta" is dispatched to this function, not to a kernel.
    torch._check(q.dim() == 4 and k.dim() == 4 and v.dim() == 4, lambda: "q, k, v must be 4-D")
    named = dict(k=k, v=v, log_gamma=log_gamma, sink_index=sink_index, attn_mask=attn_mask)
    for name, tensor in named.items():
        if tensor is not None and tensor.device != q.device:
            raise RuntimeError(
                f"zerotuning.sink_attention: {name} is on {tensor.device} but q is on {q.device}; "
                "expected all tensors on one device"
            )
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.register_fake("zerotuning::sink_attention_backward")
def _sink_attention_backward_fake(
    grad_out, grad_lse, q, k, v, log_gamma, out, lse, sink_index=None, attn_mask=None, is_causal=False,
    scale=None, softcap=None, sliding_window=None,
):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), log_gamma.new_empty(log_gamma.shape)


# ---- autograd: gradients for q, k, v and log_gamma; none for sink_index or the mask ----------------


def _setup_context(ctx, inputs, output):
    q, k, v, log_gamma, sink_index, attn_mask, is_causal, scale, softcap, sliding_window = inputs
    if attn_mask is not None and attn_mask.requires_grad:
        # An L x L gradient is what the op exists to avoid; masks carry no parameters here.
        raise NotImplementedError(
            "zerotuning.sink_attention: attn_mask requires grad, but the op gives no gradient for "
            "the mask (only for q, k, v and log_gamma); pass attn_mask.detach()"
        )
    out, lse = output
    ctx.save_for_backward(q, k, v, log_gamma, out, lse, sink_index, attn_mask)
    ctx.options = (is_causal, scale, softcap, sliding_window)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, log_gamma, out, lse, sink_index, attn_mask = ctx.saved_tensors
    if q.device.type != "cpu":
        raise NotImplementedError(
            f"zerotuning.sink_attention: the backward is implemented on the CPU only, got tensors on "
            f"{q.device}; run gradient computations on the CPU"
        )
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    grads = torch.ops.zerotuning.sink_attention_backward.default(
        grad_out, grad_lse, q, k, v, log_gamma, out, lse, sink_index, attn_mask, *ctx.options
    )
    needed = ctx.needs_input_grad
    return tuple(g if needed[i] else None for i, g in enumerate(grads)) + (None,) * 6


torch.library.register_autograd("zerotuning::sink_attention", _backward, setup_context=_setup_context)
