"""The per-row sink bookkeeping between the mask function and the attention function."""

from __future__ import annotations

import pytest
import torch

from zerotuning.hf import sinks


def test_sink_is_the_first_kept_token_shifted_by_the_cache_offset():
    padding = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    cpu = torch.device("cpu")
    assert sinks.sink_index_per_row(padding, 3, 0, cpu).tolist() == [0, 2, 5]
    # A sliding cache that starts at absolute position 2 holds row 1's sink at key 0 and has
    # dropped row 0's sink.
    assert sinks.sink_index_per_row(padding, 3, 2, cpu).tolist() == [-1, 0, 3]
    assert sinks.sink_index_per_row(padding, 3, torch.tensor(4), cpu).tolist() == [-1, -1, 1]
    assert sinks.sink_index_per_row(None, 2, 0, cpu).tolist() == [0, 0]
    assert sinks.sink_index_per_row(None, 2, 3, cpu).tolist() == [-1, -1]


def test_lookup_checks_kind_and_length_and_copies_once_per_device():
    state = sinks.SinkState("TinyModel")
    recorded = torch.tensor([0, 2])
    state.record(sinks.mask_kind(None), 7, recorded)
    assert state.lookup("full", 7, torch.device("cpu")) is recorded
    on_meta = state.lookup("full", 7, torch.device("meta"))
    assert on_meta.device.type == "meta" and state.lookup("full", 7, torch.device("meta")) is on_meta
    with pytest.raises(RuntimeError, match=r"window=4 attention.*recorded: \['full'\]"):
        state.lookup(sinks.mask_kind(4), 7, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="built for 7 keys but the attention layer received 9"):
        state.lookup("full", 9, torch.device("cpu"))
    state.clear()
    with pytest.raises(RuntimeError, match="recorded: none"):
        state.lookup("full", 7, torch.device("cpu"))


def test_unknown_configs_are_refused():
    class Config:
        pass

    config = Config()
    with pytest.raises(RuntimeError, match="did not prepare"):
        sinks.state_for(config)
    state = sinks.SinkState("TinyModel")
    sinks.register(config, state)
    try:
        assert sinks.state_for(config) is state
    finally:
        sinks.unregister(config)
