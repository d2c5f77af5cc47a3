"""Records what lm-eval actually feeds a patched model: every forward's token ids and mask, whether
it is a decoding step, and the sink index the zerotuning mask function gave each row (the key the
kernel biases)."""

from __future__ import annotations

import torch

from zerotuning.hf import sinks


class ForwardLog:
    """``calls``: one dict per model forward: ``input_ids``, ``attention_mask`` (or None), ``decoding``, ``sinks`` per mask kind."""

    def __init__(self, model: torch.nn.Module, monkeypatch) -> None:
        self.calls: list[dict] = []
        model.register_forward_pre_hook(self._forward, with_kwargs=True)
        record = sinks.SinkState.record

        def logged_record(state, kind, kv_length, sink_index, packed=None):
            if self.calls:
                self.calls[-1]["sinks"][kind] = sink_index.tolist()
            return record(state, kind, kv_length, sink_index, packed)

        monkeypatch.setattr(sinks.SinkState, "record", logged_record)

    def _forward(self, module, args, kwargs) -> None:
        input_ids = kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0]
        mask = kwargs.get("attention_mask")
        cache = kwargs.get("past_key_values")
        self.calls.append(
            {
                "input_ids": input_ids.tolist(),
                "attention_mask": None if mask is None else mask.tolist(),
                "decoding": cache is not None and cache.get_seq_length() > 0,
                "sinks": {},
            }
        )
