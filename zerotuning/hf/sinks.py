"""Which key is each batch row's sink, from the mask function to the attention function.

transformers builds one mask per mask kind (full attention, sliding window) per forward and
hands it to every layer of that kind. Only the mask function sees the 2D padding mask and the
cache offsets, so it is the one place that knows where the sink (the row's first kept token,
METHOD.md §1) sits among a layer's keys: key ``j`` of a layer stands for absolute position
``kv_offset + j``, so the sink is key ``first_kept - kv_offset``, or none (-1) when a sliding
cache has already dropped it. A layer whose window hides the sink from every query gets no bias
from the operator itself (its mask hides the sink).

The mask function records one ``[batch]`` int64 tensor per kind in the model's ``SinkState``;
the attention function reads it back. The state is plain Python attributes and dicts, which
``torch.compile`` traces as side effects, and it is cleared after each forward so that a
forward whose masks did not come through our mask function fails loudly instead of reusing
stale sinks.
"""

from __future__ import annotations

import torch

FULL_ATTENTION = "full"


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
    sink = first_kept - kv_offset
    return torch.where(sink >= 0, sink, -1)


class SinkState:
    """Sinks of the current forward, per mask kind, with copies per device for device_map models."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.by_kind: dict[str, tuple[int, dict[torch.device, torch.Tensor]]] = {}

    def record(self, kind: str, kv_length: int, sink_index: torch.Tensor) -> None:
        self.by_kind[kind] = (kv_length, {sink_index.device: sink_index})

    def clear(self) -> None:
        self.by_kind = {}

    def lookup(self, kind: str, kv_length: int, device: torch.device) -> torch.Tensor:
        """The recorded sinks for ``kind`` on ``device``; a clear error if this forward recorded none."""
        entry = self.by_kind.get(kind)
        if entry is None:
            raise RuntimeError(
                f"zerotuning: no sink positions were recorded for {kind} attention in this forward of "
                f"{self.model_name} (recorded: {sorted(self.by_kind) or 'none'}). ZeroTuning needs the "
                "attention masks that transformers builds from a 2D attention_mask; a prebuilt 4D mask "
                "or a model that builds its masks by other means is not supported"
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


_STATES: dict[int, SinkState] = {}


def register(config: object, state: SinkState) -> None:
    _STATES[id(config)] = state


def unregister(config: object) -> None:
    _STATES.pop(id(config), None)


def state_for(config: object) -> SinkState:
    """The SinkState of the model owning ``config`` (keyed by identity: configs are not hashable)."""
    state = _STATES.get(id(config))
    if state is None:
        raise RuntimeError(
            f"zerotuning: the attention mask is being built for a {type(config).__name__} that "
            "zerotuning.apply() did not prepare (was the model copied after apply()?); call "
            "zerotuning.apply(model, profile) on the model you run"
        )
    return state
