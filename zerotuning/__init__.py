"""ZeroTuning: rescale each attention head's attention to the initial token, without training."""

from .load_time import register_at_transformers_import
from .ops import cpu_isa, sink_attention
from .profile import ModelIdentity, Profile, ProfileMismatchWarning
from .reference import sink_attention_reference

# The HuggingFace glue imports transformers (seconds); load it on first use only.
_HF_NAMES = ("apply", "remove", "applied", "from_pretrained")

# attn_implementation="zerotuning" works in from_pretrained from here on (registered once
# transformers' models are imported, not before).
register_at_transformers_import()


def __getattr__(name: str):
    if name in _HF_NAMES:
        from . import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'zerotuning' has no attribute {name!r}")


__all__ = ["sink_attention", "sink_attention_reference", "cpu_isa", "Profile", "ModelIdentity", "ProfileMismatchWarning", *_HF_NAMES]
