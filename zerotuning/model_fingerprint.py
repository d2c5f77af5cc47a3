"""Which model a profile was tuned on: its name or path, and a fingerprint of its configuration.

The shape (layers x heads) says whether a profile *can* be applied; these two say whether it was
tuned on *this* model. The fingerprint hashes the configuration fields that define the
decoder's sizes, vocabulary, positions, norms, windows and special tokens, and leaves out
bookkeeping that changes between loads of the same weights: paths, dtype, the transformers
version, the attention implementation, caching and output flags. It also leaves out the RoPE
settings, whose layout differs between transformers 4.57 (``rope_theta``, ``rope_scaling``) and
5.x (``rope_parameters``, per layer type for Gemma 3): the same model keeps one fingerprint
under both lines.

Two checkpoints with identical configurations (a fine-tune and its base, say) share a
fingerprint; the recorded name tells them apart in messages and model cards, not in the check.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

FINGERPRINT_PREFIX = "sha256:"

_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "layer_norm_eps",
    "sliding_window",
    "layer_types",
    "query_pre_attn_scalar",
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
)


def config_fingerprint(config: Any) -> str:
    """``"sha256:<hex>"`` of the defining fields of a (text) config; absent fields count as null."""
    fields = {name: _plain(getattr(config, name, None)) for name in _FIELDS}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return FINGERPRINT_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_name(model: Any) -> str | None:
    """The name or path a model was loaded from: ``zerotuning.models.load_model``'s spec when it
    loaded the model, else transformers' ``name_or_path`` (empty for a model built from a config)."""
    config = model.config
    record = getattr(config, "zerotuning_load", None)
    if isinstance(record, dict) and record.get("spec"):
        return str(record["spec"])
    name = getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", None)
    return str(name) if name else None


def _plain(value: Any) -> Any:
    """JSON-able, order-independent form of a config value (nested configs as dicts)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    to_dict = getattr(value, "to_dict", None)
    return _plain(to_dict()) if callable(to_dict) else repr(value)
