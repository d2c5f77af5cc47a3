"""The per-row sink bookkeeping between the mask function and the attention function, and who owns it."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from hf_helpers import ATOL, RTOL, logits, mixed_profile
from tiny_models import left_padded, prompts, tiny_model

from zerotuning import Profile, applied, apply, remove
from zerotuning.hf import BACKEND_NAME, active_profile, sinks
from zerotuning.hf.patching import PATCH_ATTRIBUTE


@pytest.fixture
def batch():
    return left_padded(prompts([8, 5]))


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
    recorded = torch.tensor([0, 2])
    with pytest.raises(RuntimeError, match="did not prepare"):
        sinks.record(config, "full", 7, recorded)
    attachment = sinks.attach(torch.nn.Identity(), [config], [])
    try:
        sinks.record(config, "full", 7, recorded)
        assert attachment.state.lookup("full", 7, torch.device("cpu")) is recorded
        with pytest.raises(RuntimeError, match="did not prepare"):
            sinks.record(copy.deepcopy(config), "full", 7, recorded)
    finally:
        sinks.detach(attachment)
    with pytest.raises(RuntimeError, match="did not prepare"):
        sinks.record(config, "full", 7, recorded)


def test_a_model_dropped_without_remove_leaves_no_sink_state_behind(batch):
    model = tiny_model("llama")
    config = model.config
    apply(model, mixed_profile(model))
    logits(model, *batch)
    dropped_model = weakref.ref(model)
    dropped_state = weakref.ref(getattr(model, PATCH_ATTRIBUTE).sink_attachment.state)
    del model
    gc.collect()
    assert dropped_model() is None and dropped_state() is None
    # The config outlives its model but leads to no state any more.
    with pytest.raises(RuntimeError, match="did not prepare"):
        sinks.record(config, "full", 7, torch.tensor([0]))


def test_two_models_alive_at_once_keep_separate_sinks():
    first_batch, second_batch = left_padded(prompts([8, 5])), left_padded(prompts([3, 9, 6], seed=1))
    first, second = tiny_model("qwen2"), tiny_model("mistral")
    profiles = {id(first): mixed_profile(first), id(second): Profile.uniform(second, 3.0)}
    alone = {}
    for model, batch in ((first, first_batch), (second, second_batch)):
        with applied(model, profiles[id(model)]):
            alone[id(model)] = logits(model, *batch)
    apply(first, profiles[id(first)])
    apply(second, profiles[id(second)])
    try:
        for model, batch in ((first, first_batch), (second, second_batch), (first, first_batch)):
            kept = batch[1].bool()
            torch.testing.assert_close(logits(model, *batch)[kept], alone[id(model)][kept], atol=ATOL, rtol=RTOL)
    finally:
        remove(first)
        remove(second)


def test_two_models_sharing_one_config_object_are_refused(batch):
    model = tiny_model("llama")
    twin = type(model)(model.config).eval()
    apply(model, mixed_profile(model))
    try:
        with pytest.raises(ValueError, match="also the config of another model"):
            apply(twin, mixed_profile(twin))
        assert active_profile(twin) is None and twin._forward_hooks == {}
        assert model.config._attn_implementation == BACKEND_NAME
        logits(model, *batch)
    finally:
        remove(model)


def test_a_recycled_config_id_finds_no_state():
    class Config:
        pass

    config, layer = Config(), torch.nn.Module()
    attachment = sinks.attach(torch.nn.Identity(), [config], [layer])
    old_id = id(config)
    del config, attachment
    gc.collect()
    assert layer.zerotuning_sink_state is not None  # the state lives on; its config does not
    # CPython usually hands freed memory to the next object of the same size: try to get the same
    # id back, and check that the object living there is not taken for the dropped config.
    for _ in range(100):
        newcomer = Config()
        if id(newcomer) == old_id:
            break
    with pytest.raises(RuntimeError, match="did not prepare"):
        sinks.record(newcomer, "full", 7, torch.tensor([0]))
