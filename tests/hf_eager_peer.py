"""An independent eager ZeroTuning for tests: the published approach, written from docs/method.md §1.

It materialises the softmax, multiplies the sink column of the chosen heads by gamma and
renormalises the row (``a_s' = gamma a_s / D``, ``a_j' = a_j / D``, ``D = 1 + (gamma - 1) a_s``),
instead of adding ``log(gamma)`` to a logit inside a kernel. It shares no code with
``zerotuning.hf``: its masks come from transformers' stock ``eager`` mask function and its sinks
are given by the test (absolute positions, so it only runs without a KV cache).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

PEER_NAME = "zerotuning_test_eager_peer"


class _PeerSettings:
    gammas: torch.Tensor | None = None  # [num_layers, num_heads]
    sink_positions: torch.Tensor | None = None  # [batch]


_SETTINGS = _PeerSettings()


def _peer_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    gammas, sink = _SETTINGS.gammas, _SETTINGS.sink_positions
    if gammas is None or sink is None:
        raise RuntimeError("the eager peer runs only inside eager_peer(...)")
    batch, heads, _, _ = query.shape
    groups = heads // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    mask = attention_mask[..., : key.shape[-2]].float()
    scores = scores + mask
    probs = torch.softmax(scores, dim=-1)

    column = sink.view(batch, 1, 1, 1).expand(batch, heads, query.shape[2], 1)
    sink_visible = mask.expand(batch, heads, -1, -1).gather(-1, column) == 0
    gamma = gammas[module.layer_idx].view(1, heads, 1, 1).to(probs)
    gamma = torch.where(sink_visible, gamma, torch.ones_like(gamma))
    sink_prob = probs.gather(-1, column)
    denominator = 1 + (gamma - 1) * sink_prob
    rescaled = (probs / denominator).scatter(-1, column, gamma * sink_prob / denominator)
    out = torch.matmul(rescaled, value.float()).to(query.dtype)
    return out.transpose(1, 2).contiguous(), rescaled


AttentionInterface.register(PEER_NAME, _peer_attention)
AttentionMaskInterface.register(PEER_NAME, eager_mask)


@contextlib.contextmanager
def eager_peer(model, gammas: list[list[float]], sink_positions: torch.Tensor) -> Iterator[None]:
    """Run ``model`` (no KV cache!) with the eager peer; ``sink_positions`` [batch] absolute indices."""
    previous = model.config._attn_implementation
    _SETTINGS.gammas = torch.tensor(gammas, dtype=torch.float32)
    _SETTINGS.sink_positions = sink_positions.to(torch.int64)
    model.set_attn_implementation(PEER_NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
        _SETTINGS.gammas = _SETTINGS.sink_positions = None


def peer_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, gammas: list[list[float]]) -> torch.Tensor:
    """Logits of a full no-cache forward under the peer; the sink of a row is its first kept token."""
    sinks = attention_mask.to(torch.int64).argmax(dim=-1)
    with eager_peer(model, gammas, sinks), torch.no_grad():
        return model(input_ids, attention_mask=attention_mask, use_cache=False).logits
