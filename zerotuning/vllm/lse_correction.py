"""The exact post-hoc sink correction: plain attention's output and log-sum-exp -> sink-biased attention.

A kernel that takes no per-key bias (vLLM's FlashAttention) can still give ZeroTuning's attention
exactly, if it returns the log-sum-exp of each query's logits. With ``s_j`` the final logits of the
keys a query sees (scaled, softcapped), ``Z = sum_j exp(s_j) = exp(lse)`` and ``out = sum_j
exp(s_j) v_j / Z``, adding ``log(gamma)`` to the sink's logit ``s_0`` gives

    p = exp(s_0 - lse)                                   (the sink's weight without the bias)
    out' = (out + (gamma - 1) p v_0) / (1 + (gamma - 1) p)
         = out + c (v_0 - out),   c = (gamma - 1) p / (1 + (gamma - 1) p)
    lse' = lse + log(1 + (gamma - 1) p)

which is what this module computes (the second form, in float32), per token and query head. For
gamma > 1, ``c`` is the logistic function of ``log(gamma - 1) + s_0 - lse`` (no overflow however
large gamma is). For gamma < 1 the correction divides by ``1 - (1 - gamma) p >= gamma``: the
rounding error already in ``out`` (the kernel's output, in the model's dtype) grows by up to
``1 / gamma`` where the sink holds nearly all the weight. A query that sees only the sink (the
request's position 0) has ``p = 1``: its output is ``v_0`` for every gamma > 0 and zeros for
gamma = 0 (no key left, as in ``zerotuning.reference``); callers say which queries those are
(``sees_only_sink``), since ``p`` computed from two roundings may miss 1 by an ulp.

Shapes follow vLLM's FlashAttention backend: ``out``/``query`` ``[T, H, D]`` (packed tokens of all
requests), ``lse`` ``[H, T]`` (natural log), the sink keys and values ``[T, KVH, D]`` (each token's
request's position 0), heads ``h`` of a group sharing KV head ``h // (H / KVH)``. Pure torch, no
vLLM import, no host-device synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def sink_logits(query: torch.Tensor, sink_key: torch.Tensor, scale: float, softcap: float = 0.0) -> torch.Tensor:
    """``[T, H]`` float32: each query's logit on its sink key, ``scale * q . k_0``, softcapped when ``softcap > 0``.

    ``query [T, H, D]``, ``sink_key [T, KVH, D]`` with KVH dividing H (grouped-query attention).
    """
    _check_rank("query", query, 3)
    _check_rank("sink_key", sink_key, 3)
    tokens, heads, head_dim = query.shape
    kv_heads = sink_key.shape[1]
    if sink_key.shape[0] != tokens or sink_key.shape[2] != head_dim:
        raise ValueError(f"sink_key: expected [{tokens}, kv_heads, {head_dim}] to match query {tuple(query.shape)}, got {tuple(sink_key.shape)}")
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"sink_key: its {kv_heads} KV heads do not divide the query's {heads} heads")
    q = query.reshape(tokens, kv_heads, heads // kv_heads, head_dim).float()  # vLLM's query may be a strided slice of qkv
    logits = torch.matmul(q, sink_key.float()[..., None]).squeeze(-1).mul_(scale)  # [T, KVH, G]
    if softcap > 0:
        logits = logits.div_(softcap).tanh_().mul_(softcap)
    return logits.reshape(tokens, heads)


def correct_with_sink(
    out: torch.Tensor,
    lse: torch.Tensor,
    sink_logit: torch.Tensor,
    sink_value: torch.Tensor,
    log_gamma: torch.Tensor,
    sees_only_sink: torch.Tensor | None = None,
    *,
    out_dtype: torch.dtype | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sink-biased attention from plain attention's ``out [T, H, D]`` and ``lse [H, T]``.

    ``sink_logit [T, H]`` (``sink_logits``), ``sink_value [T, KVH, D]``, ``log_gamma [H]`` (``-inf``:
    gamma 0; 0: head untouched), ``sees_only_sink [T]`` bool (None: no such query). Returns the
    corrected output in ``out_dtype`` (default: ``out``'s dtype), and with ``return_lse`` also the
    corrected log-sum-exp ``[H, T]`` float32. Arithmetic in float32; ``out`` is not modified.
    """
    _check_rank("out", out, 3)
    tokens, heads, head_dim = out.shape
    if tuple(lse.shape) != (heads, tokens):
        raise ValueError(f"lse: expected [heads, tokens] = [{heads}, {tokens}] for out {tuple(out.shape)}, got {tuple(lse.shape)}")
    if tuple(sink_logit.shape) != (tokens, heads):
        raise ValueError(f"sink_logit: expected [{tokens}, {heads}], got {tuple(sink_logit.shape)}")
    _check_rank("sink_value", sink_value, 3)
    kv_heads = sink_value.shape[1]
    if sink_value.shape[0] != tokens or sink_value.shape[2] != head_dim or kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"sink_value: expected [{tokens}, kv_heads dividing {heads}, {head_dim}], got {tuple(sink_value.shape)}")
    if tuple(log_gamma.shape) != (heads,):
        raise ValueError(f"log_gamma: expected [{heads}] (one per query head), got {tuple(log_gamma.shape)}")
    if sees_only_sink is not None and (sees_only_sink.dtype != torch.bool or tuple(sees_only_sink.shape) != (tokens,)):
        raise ValueError(f"sees_only_sink: expected a bool tensor [{tokens}], got {sees_only_sink.dtype} {tuple(sees_only_sink.shape)}")
    if not (out.device == lse.device == sink_logit.device == sink_value.device == log_gamma.device):
        raise ValueError(
            f"out, lse, sink_logit, sink_value and log_gamma must be on one device, got {out.device}, {lse.device}, "
            f"{sink_logit.device}, {sink_value.device}, {log_gamma.device}"
        )

    group = heads // kv_heads
    log_g = log_gamma.float()  # [H]
    # x = s_0 - lse = log p. c = (g - 1) p / (1 + (g - 1) p), split by the sign of g - 1 for stability.
    x = sink_logit.float() - lse.float().t()  # [T, H]
    above = log_g > 0
    # g > 1: (g - 1) p = exp(log(g - 1) + x), c = sigmoid(log(g - 1) + x); log(g - 1) = lg + log(1 - exp(-lg)).
    log_g_minus_1 = log_g + torch.log(-torch.expm1(-log_g.clamp(min=1e-30)))
    c_above = torch.sigmoid(log_g_minus_1 + x)
    # g <= 1: (g - 1) p = -(1 - g) p in (-1, 0], c = that / (1 + that).
    a_below = torch.expm1(log_g.clamp(max=0.0)) * torch.exp(x).clamp(max=1.0)
    c_below = a_below / (1.0 + a_below)
    c = torch.where(above, c_above, c_below)  # [T, H]
    v0 = sink_value.float().repeat_interleave(group, dim=1) if group > 1 else sink_value.float()
    out_f = out.float()
    corrected = torch.addcmul(out_f, c[..., None], v0 - out_f)
    if sees_only_sink is not None:
        # p = 1 exactly: v_0 (= out) for gamma > 0, zeros for gamma 0 (no key left).
        kept = torch.isfinite(log_g)[None, :, None]  # [1, H, 1]
        only = sees_only_sink[:, None, None]
        corrected = torch.where(only, torch.where(kept, out_f, torch.zeros_like(out_f)), corrected)
    result = corrected.to(out.dtype if out_dtype is None else out_dtype)
    if not return_lse:
        return result
    # lse' = lse + log(1 + (g - 1) p): softplus for g > 1, log1p of a value in (-1, 0] otherwise.
    step = torch.where(above, torch.nn.functional.softplus(log_g_minus_1 + x), torch.log1p(a_below))
    if sees_only_sink is not None:
        step = torch.where(sees_only_sink[:, None], log_g.expand(tokens, heads), step)  # lse' = s_0 + log g
    return result, (lse.float().t() + step).t()


def sink_correction(
    out: torch.Tensor,
    lse: torch.Tensor,
    query: torch.Tensor,
    request_sink_keys: torch.Tensor,
    request_sink_values: torch.Tensor,
    token_request: torch.Tensor,
    log_gamma: torch.Tensor,
    scale: float,
    softcap: float = 0.0,
    sees_only_sink: torch.Tensor | None = None,
) -> torch.Tensor:
    """The whole step for a packed batch: per-request sinks -> per-token sink logits -> corrected output.

    ``request_sink_keys``/``request_sink_values`` ``[R, KVH, D]`` (position 0 of each request),
    ``token_request [T]`` int (the request of each token of ``out``/``query``). Returns the
    corrected output ``[T, H, D]`` in ``out``'s dtype.
    """
    if token_request.dim() != 1 or token_request.shape[0] != out.shape[0]:
        raise ValueError(f"token_request: expected [{out.shape[0]}] (one request index per token), got {tuple(token_request.shape)}")
    if request_sink_keys.shape != request_sink_values.shape:
        raise ValueError(f"request_sink_keys {tuple(request_sink_keys.shape)} and request_sink_values {tuple(request_sink_values.shape)} must have one shape")
    keys = request_sink_keys[token_request]
    values = request_sink_values[token_request]
    return correct_with_sink(out, lse, sink_logits(query, keys, scale, softcap), values, log_gamma, sees_only_sink)


@dataclass(frozen=True)
class TokenSinks:
    """Where each packed token's sink is in vLLM's paged cache, and which tokens see only it."""

    blocks: torch.Tensor  # [T] int64: block_table[request of the token, 0], whose slot 0 holds position 0
    sees_only_sink: torch.Tensor  # [T] bool: the token is its request's position 0


def token_sinks(query_start_loc: torch.Tensor, seq_lens: torch.Tensor, block_table: torch.Tensor, num_tokens: int) -> TokenSinks:
    """The sinks of the first ``num_tokens`` packed tokens, from vLLM's attention metadata, on its device.

    ``query_start_loc [R + 1]`` (cumulative query lengths; entries past the last request may repeat
    its end, as vLLM pads them), ``seq_lens [R]`` (cached + new tokens of each request),
    ``block_table [R, max_blocks]``. Each token's position is ``seq_len - query_len + offset``; the
    sink is position 0: slot 0 of the request's first block (also with prefix caching, whose first
    block is shared, and chunked prefill). No host-device synchronisation.
    """
    if query_start_loc.dim() != 1 or seq_lens.dim() != 1 or block_table.dim() != 2:
        raise ValueError(
            f"query_start_loc [R + 1], seq_lens [R] and block_table [R, blocks] expected, got {tuple(query_start_loc.shape)}, "
            f"{tuple(seq_lens.shape)}, {tuple(block_table.shape)}"
        )
    requests = seq_lens.shape[0]
    if query_start_loc.shape[0] < requests + 1 or block_table.shape[0] < requests:
        raise ValueError(f"query_start_loc ({query_start_loc.shape[0]}) and block_table ({block_table.shape[0]} rows) must cover the {requests} requests of seq_lens")
    starts = query_start_loc[: requests + 1]
    tokens = torch.arange(num_tokens, device=starts.device, dtype=starts.dtype)
    request = torch.searchsorted(starts[1:].contiguous(), tokens, right=True).clamp_(max=max(requests - 1, 0))
    first, end = starts[request], starts[request + 1]
    positions = seq_lens[request] - (end - first) + (tokens - first)
    return TokenSinks(block_table[request, 0].long(), positions == 0)


def gather_sinks(key_cache: torch.Tensor, value_cache: torch.Tensor, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[T, KVH, D]`` keys and values of slot 0 of each token's sink block.

    ``key_cache``/``value_cache`` ``[num_blocks, block_size, KVH, D]``: the views vLLM's FlashAttention
    backend makes of a layer's cache (``kv_cache.transpose(1, 2).split(head_size, dim=-1)``), any strides.
    """
    if key_cache.dim() != 4 or value_cache.shape != key_cache.shape:
        raise ValueError(f"key_cache and value_cache: expected one shape [num_blocks, block_size, kv_heads, D], got {tuple(key_cache.shape)} and {tuple(value_cache.shape)}")
    return key_cache[blocks, 0], value_cache[blocks, 0]


def _check_rank(name: str, tensor: torch.Tensor, rank: int) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(tensor).__name__}")
    if tensor.dim() != rank:
        raise ValueError(f"{name}: expected {rank} dimensions, got shape {tuple(tensor.shape)}")
