"""Plain PyTorch sink attention: the definition the kernels are tested against.

It materialises every score matrix, so it is for tests and readers, never for models.
Semantics (docs/method.md), shared with ``torch.ops.zerotuning.sink_attention``:

* scores ``s = scale * q k^T``; Gemma-style ``softcap * tanh(s / softcap)`` when softcap is set;
  then the additive part of ``attn_mask``; then ``log_gamma[h]`` on the sink key of the row.
* a key is hidden from a query by a False in a bool mask, by a float mask value at or below the
  lowest finite value of the mask's dtype (what HuggingFace writes for "masked"; NaN is not
  below it, so a NaN mask value is an additive NaN), by
  ``is_causal`` (diagonal aligned to the END of the keys, so a decode step sees all the cache), or
  by ``sliding_window`` W (query at position p sees keys p - W < j).
* the sink of batch row b is ``sink_index[b]``; -1 means the row has none.  ``sink_index=None``
  means the first key that ``attn_mask`` leaves visible to some query of the row (its left
  padding length); ``is_causal`` and ``sliding_window`` do not move it, they only decide which
  queries can see it.  A query that cannot see its row's sink gets no bias.
* a query that sees no key gets zeros and a log-sum-exp of -inf.
* non-finite values propagate (docs/operator.md): a visible key whose final logit is NaN or +inf
  (a NaN or inf in q, in that key's k, or a NaN or +inf additive mask value) makes the query's
  output row and log-sum-exp NaN; a logit of -inf weighs 0 (all of them: as if no key were
  seen). A non-finite v entry of a key with positive weight makes that output column non-finite
  (IEEE arithmetic); one of a key with weight 0 (hidden) is not specified (0 * NaN is NaN here,
  the kernels may skip the key).
"""

from __future__ import annotations

import math

import torch


def key_positions_visible(
    lq: int, lk: int, is_causal: bool, sliding_window: int | None, device: torch.device
) -> torch.Tensor:
    """[Lq, Lk] bool: which keys each query may see by position alone (causal, window)."""
    q_pos = torch.arange(lq, device=device)[:, None] + (lk - lq)
    k_pos = torch.arange(lk, device=device)[None, :]
    visible = torch.ones(lq, lk, dtype=torch.bool, device=device)
    if is_causal:
        visible &= k_pos <= q_pos
    if sliding_window is not None:
        visible &= k_pos > q_pos - sliding_window
    return visible


def mask_visible_and_bias(attn_mask: torch.Tensor | None, shape, device, dtype):
    """Split a user mask into (visible bool, additive float) tensors of the full score shape."""
    if attn_mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device), torch.zeros(shape, dtype=dtype, device=device)
    mask = attn_mask.expand(shape)
    if mask.dtype == torch.bool:
        return mask.clone(), torch.zeros(shape, dtype=dtype, device=device)
    hidden = mask <= torch.finfo(mask.dtype).min
    return ~hidden, mask.to(dtype).masked_fill(hidden, 0.0)


def first_visible_keys(mask_visible: torch.Tensor) -> torch.Tensor:
    """[B] int64: per batch row, the first key some query of some head may see; -1 if none."""
    seen = mask_visible.any(dim=1).any(dim=1)  # [B, Lk]
    first = seen.to(torch.int8).argmax(dim=-1)
    return torch.where(seen.any(dim=-1), first, torch.full_like(first, -1))


def sink_attention_reference(
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
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (out [B, Hq, Lq, D] in ``compute_dtype``, lse [B, Hq, Lq] in ``compute_dtype``)."""
    batch, hq, lq, head_dim = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    group = hq // hkv
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    qf = q.to(compute_dtype)
    kf = k.to(compute_dtype).repeat_interleave(group, dim=1)
    vf = v.to(compute_dtype).repeat_interleave(group, dim=1)

    scores = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)

    shape = (batch, hq, lq, lk)
    mask_visible, additive = mask_visible_and_bias(attn_mask, shape, q.device, compute_dtype)
    visible = mask_visible & key_positions_visible(lq, lk, is_causal, sliding_window, q.device)
    scores = scores + additive

    sinks = first_visible_keys(mask_visible) if sink_index is None else sink_index.to(torch.int64)
    for b in range(batch):
        s = int(sinks[b])
        if s < 0:
            continue
        bias = log_gamma.to(compute_dtype)[:, None] * visible[b, :, :, s]
        scores[b, :, :, s] += bias

    scores = scores.masked_fill(~visible, -math.inf)
    # Non-finite logits of visible keys: NaN or +inf poisons the query's row, -inf weighs 0.
    # A poisoned row keeps its NaN/+inf logits, so autograd gives NaN gradients to what the row
    # sees (and 0 to hidden keys); torch.where sets the values without cutting the gradient.
    poisoned = (torch.isnan(scores) | (scores == math.inf)).any(dim=-1)
    empty = ~((scores > -math.inf).any(dim=-1) | poisoned)  # sees no key, or only -inf logits
    lse = torch.logsumexp(scores, dim=-1)
    lse = torch.where(poisoned, lse + math.nan, lse)  # +inf rows too: every weight becomes NaN
    probs = torch.exp(scores - lse[..., None]).masked_fill(empty[..., None], 0.0)
    out = torch.matmul(probs, vf)
    return torch.where(poisoned[..., None], out + math.nan, out), lse
