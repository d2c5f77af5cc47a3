"""ZeroTuning: rescale each attention head's attention to the initial token, without training."""

from .ops import cpu_isa, sink_attention
from .reference import sink_attention_reference

__all__ = ["sink_attention", "sink_attention_reference", "cpu_isa"]
