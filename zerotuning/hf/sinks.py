"""Which key is each batch row's sink, from the mask function to the attention function.

transformers builds one mask per mask kind (full attention, sliding window) per forward and
hands it to every layer of that kind. Only the mask function sees the 2D padding mask and the
cache offsets, so it is the one place that knows where the sink (the row's first kept token,
docs/method.md) sits among a layer's keys: key ``j`` of a layer stands for absolute position
``kv_offset + j``, so the sink is key ``first_kept - kv_offset``, or none (-1) when a sliding
cache has already dropped it. A layer whose window hides the sink from every query gets no bias
from the operator itself (its mask hides the sink).

This module owns the per-model ``SinkState`` that carries these ``[batch]`` int64 tensors from
the writer (``record``, called by the mask function, which is given the model's config) to the
reader (``recorded``, called by the attention function, which is given the attention module).
``attach`` ties a state to one model and ``detach`` unties it; the model owns the state, and
nothing outlives a model dropped without ``detach``. The state is plain Python attributes and
dicts, which ``torch.compile`` traces as side effects, and it is cleared after each forward so
that a forward whose masks did not come through the mask function fails loudly instead of
reusing stale sinks.

Packed sequences (several sequences in one row, told apart only by ``position_ids`` that restart
at 0, with no attention mask and no cache) are seen here too: transformers then hides each
sequence's keys from the others' queries, so the first key a query of a later sequence sees is
its own sequence's first token, not the row's. One sink
per row cannot be right for them, so the mask function records what it saw (``packed_query``) and
the attention function refuses such a forward unless the layer's gammas are all 1.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch

FULL_ATTENTION = "full"
STATE_ATTRIBUTE = "zerotuning_sink_state"


def mask_kind(local_size: int | None) -> str:
    """The key under which sinks of one mask kind are kept (mask and attention side agree on it)."""
    return FULL_ATTENTION if local_size is None else f"window={int(local_size)}"


def sink_index_per_row(
    padding_mask: torch.Tensor | None, batch_size: int, kv_offset: int | torch.Tensor, device: torch.device
) -> torch.Tensor:
    """[batch] int64: the sink's index among the layer's keys, -1 where the cache no longer holds it.

    ``padding_mask`` is transformers' 2D mask over absolute positions (True = real token); the
    sink is its first True (the left-padding length), position 0 without a mask.
    """
    if padding_mask is None:
        first_kept = torch.zeros(batch_size, dtype=torch.int64, device=device)
    else:
        first_kept = padding_mask.to(torch.uint8).argmax(dim=-1)
    if isinstance(kv_offset, int) and kv_offset == 0:  # the usual case: no op per forward beyond argmax
        return first_kept
    # Negative (dropped by a sliding cache) becomes -1: one op, not a comparison and a select.
    return (first_kept - kv_offset).clamp_min_(-1)


def packed_query(mask: torch.Tensor, local_size: int | None) -> str | None:
    """Where a mask built without padding or cache shows several sequences in a row, else None.

    For a forward without an attention mask and without a cache (``q_length == kv_length``,
    ``kv_offset == 0``), one sequence per row lets query ``i`` see keys from
    ``max(0, i - local_size + 1)`` on (transformers' window: ``kv_idx > q_idx - window``), from 0
    without a window. A query whose first visible key is later starts, or belongs to, a later
    sequence of the row (transformers' packed-sequence mask). One pass over the mask and one host
    sync per forward, only for a materialised mask without an attention mask.
    """
    first_visible = mask[:, 0].to(torch.uint8).argmax(dim=-1)  # [batch, q_length]; every query sees itself
    queries = torch.arange(first_visible.shape[-1], device=mask.device)
    expected = torch.zeros_like(queries) if local_size is None else (queries - int(local_size) + 1).clamp_min(0)
    later = first_visible > expected
    if not bool(later.any()):
        return None
    row, query = later.nonzero()[0].tolist()
    return (
        f"row {row}: query {query} sees keys from {int(first_visible[row, query])} on, where one sequence per row "
        f"lets it see key {int(expected[query])}"
    )


class SinkState:
    """Sinks of the current forward, per mask kind, with copies per device for device_map models."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.by_kind: dict[str, tuple[int, dict[torch.device, torch.Tensor]]] = {}
        # Mask kind -> where this forward's mask showed packed sequences (``packed_query``).
        self.packed: dict[str, str] = {}

    def record(self, kind: str, kv_length: int, sink_index: torch.Tensor, packed: str | None = None) -> None:
        self.by_kind[kind] = (kv_length, {sink_index.device: sink_index})
        if packed is None:
            self.packed.pop(kind, None)
        else:
            self.packed[kind] = packed

    def clear(self) -> None:
        self.by_kind = {}
        self.packed = {}

    def lookup(self, kind: str, kv_length: int, device: torch.device) -> torch.Tensor:
        """The recorded sinks for ``kind`` on ``device``; a clear error if this forward recorded none."""
        entry = self.by_kind.get(kind)
        if entry is None:
            raise RuntimeError(
                f"zerotuning: no sink positions were recorded for {kind} attention in this forward of "
                f"{self.model_name} (recorded: {sorted(self.by_kind) or 'none'}). ZeroTuning needs the "
                "attention masks that transformers builds from a 2D attention_mask; a prebuilt 4D mask "
                "or a model that builds its masks by other means is not supported. A model copied after "
                "zerotuning.apply() has no sink state of its own: call zerotuning.remove and zerotuning.apply on the copy"
            )
        recorded_length, per_device = entry
        if recorded_length != kv_length:
            raise RuntimeError(
                f"zerotuning: the {kind} mask of {self.model_name} was built for {recorded_length} keys but "
                f"the attention layer received {kv_length}; this model's layers and masks do not line up"
            )
        sink_index = per_device.get(device)
        if sink_index is None:
            # Layers spread by device_map: copy once per forward and device, not once per layer.
            sink_index = next(iter(per_device.values())).to(device, non_blocking=True)
            per_device[device] = sink_index
        return sink_index


# id(config) -> a weak reference to the SinkState of the attached model that owns the config.
# The mask function is given the config and nothing else of the model, and a transformers config
# can neither carry the state (it serialises its __dict__: repr, save_pretrained, ==) nor key a
# WeakKeyDictionary (it defines __eq__, so it is unhashable); a lookup through weak references to
# the config (weakref.getweakrefs) is not traceable by torch.compile. So the map is keyed by
# identity and holds nothing strongly: the model alone owns its state, and weakref.finalize drops
# an entry as soon as its config or its state is freed. An entry never outlives its config, so a
# recycled id never finds one.
_ATTACHED: dict[int, weakref.ref] = {}


@dataclass
class SinkAttachment:
    """What ``attach`` put on a model: its state, where it is reachable from, and the clearing hook."""

    state: SinkState
    modules: list[torch.nn.Module]
    configs: list[Any]
    hook: torch.utils.hooks.RemovableHandle
    state_ref: weakref.ref
    finalizers: list[weakref.finalize]


def attach(model: torch.nn.Module, configs: list[Any], modules: list[torch.nn.Module]) -> SinkAttachment:
    """Give ``model`` one SinkState, written through ``configs`` and read by the attention ``modules``.

    Raises ValueError, before any change, if a config already belongs to another attached model
    (two models built on one config object would write into each other's sinks).
    """
    shared = [type(config).__name__ for config in configs if _state_of(config) is not None]
    if shared:
        raise ValueError(
            f"{type(model).__name__}: its config ({', '.join(shared)}) is also the config of another model that "
            "zerotuning.apply() prepared; give each model its own config object (e.g. copy.deepcopy(config))"
        )
    state = SinkState(type(model).__name__)
    state_ref = weakref.ref(state)
    finalizers = []
    for config in configs:
        _ATTACHED[id(config)] = state_ref
        finalizers += [weakref.finalize(owner, _forget, id(config), state_ref) for owner in (config, state)]
    for module in modules:
        setattr(module, STATE_ATTRIBUTE, state)
    # Sinks live for one forward: a forward that builds no masks through the mask function must
    # find none, rather than the previous forward's.
    hook = model.register_forward_hook(lambda *_: state.clear(), always_call=True)
    return SinkAttachment(state, modules, configs, hook, state_ref, finalizers)


def detach(attachment: SinkAttachment) -> None:
    """Undo ``attach``: no state on the modules, none reachable from the configs, no hook."""
    for module in attachment.modules:
        delattr(module, STATE_ATTRIBUTE)
    for config in attachment.configs:
        _forget(id(config), attachment.state_ref)
    for finalizer in attachment.finalizers:
        finalizer.detach()
    attachment.hook.remove()


def record(config: Any, kind: str, kv_length: int, sink_index: torch.Tensor, packed: str | None = None) -> None:
    """The writer: the mask function stores the sinks of one mask kind for the model owning ``config``
    (and ``packed``, where its mask showed packed sequences)."""
    state = _state_of(config)
    if state is None:
        raise RuntimeError(
            f"zerotuning: the attention mask is being built for a {type(config).__name__} that "
            "zerotuning.apply() did not prepare (was the model copied after apply()?); call "
            "zerotuning.apply(model, profile) on the model you run"
        )
    state.record(kind, kv_length, sink_index, packed)


def recorded(module: torch.nn.Module, kind: str, kv_length: int, device: torch.device) -> torch.Tensor:
    """The reader: the sinks this forward recorded for ``module``'s mask kind, on ``device``."""
    state: SinkState | None = getattr(module, STATE_ATTRIBUTE, None)
    if state is None:
        raise RuntimeError(
            f"zerotuning: attention module {type(module).__name__} runs with the zerotuning backend "
            "but zerotuning.apply() did not prepare it"
        )
    return state.lookup(kind, kv_length, device)


def recorded_for_layer(module: torch.nn.Module, kind: str, kv_length: int, device: torch.device) -> tuple[torch.Tensor, str | None]:
    """``recorded`` and where this forward's ``kind`` mask showed packed sequences (else None), in one call.

    Runs once per layer and decoding step: the usual case (sinks recorded on this device for this
    many keys) is three dict reads; everything else, errors included, goes through ``lookup``.
    """
    state: SinkState | None = module.__dict__.get(STATE_ATTRIBUTE)
    if state is not None:
        entry = state.by_kind.get(kind)
        if entry is not None and entry[0] == kv_length:
            sink_index = entry[1].get(device)
            if sink_index is not None:
                return sink_index, state.packed.get(kind)
    sink_index = recorded(module, kind, kv_length, device)
    return sink_index, getattr(module, STATE_ATTRIBUTE).packed.get(kind)


def is_attached_config(config: Any) -> bool:
    """Whether ``config`` belongs to a model that ``attach`` prepared."""
    return _state_of(config) is not None


def is_attached_module(module: torch.nn.Module) -> bool:
    """Whether an attention module carries a sink state (prepared by ``attach``, or copied from one that was)."""
    return hasattr(module, STATE_ATTRIBUTE)


def _state_of(config: Any) -> SinkState | None:
    state_ref = _ATTACHED.get(id(config))
    return None if state_ref is None else state_ref()


def _forget(key: int, state_ref: weakref.ref) -> None:
    """Drop the entry ``key`` if it still belongs to ``state_ref`` (and not to a later attachment)."""
    if _ATTACHED.get(key) is state_ref:
        del _ATTACHED[key]


def owner_name(module: torch.nn.Module) -> str | None:
    """The class name of the model whose state an attention module holds (None if not attached), for messages."""
    state: SinkState | None = getattr(module, STATE_ATTRIBUTE, None)
    return None if state is None else state.model_name
