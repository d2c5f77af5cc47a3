"""The sink key each row of one scored forward gets, as zerotuning's mask function records it for the kernel."""

from __future__ import annotations

import pytest
import torch

from zerotuning import Profile
from zerotuning.hf import applied, sinks
from zerotuning.scoring.cost import CostLedger
from zerotuning.scoring.encoding import left_padded
from zerotuning.scoring.scorer import last_logits


def scored_batch_sinks(model, token_lists: list[tuple[int, ...]], pad_id: int) -> tuple[torch.Tensor, list[int]]:
    """(the left-padded input ids the scorer feeds, the full-attention sink index of each row) for one forward with gamma 2."""
    recorded: dict[str, list[int]] = {}
    record = sinks.SinkState.record

    def logged_record(state, kind, kv_length, sink_index, packed=None):
        recorded[kind] = sink_index.tolist()
        return record(state, kind, kv_length, sink_index, packed)

    with pytest.MonkeyPatch.context() as monkeypatch, applied(model, Profile.uniform(model, 2.0)), torch.inference_mode():
        monkeypatch.setattr(sinks.SinkState, "record", logged_record)
        last_logits(model, token_lists, pad_id, 1, CostLedger(), next(model.parameters()).device)
    input_ids, _ = left_padded(token_lists, pad_id)
    return input_ids, recorded[sinks.FULL_ATTENTION]
