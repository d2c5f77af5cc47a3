"""The ``"zerotuning"`` attention backend: an attention function and its mask function.

Both are registered under one name: since transformers 4.53 a backend without a matching mask
function silently receives no mask at all (and so loses causal and padding masking).

* The mask function builds transformers' own boolean mask (``sdpa_mask``) and records each
  row's sink for the layers of that mask kind (see ``sinks.py``).
* The attention function calls the ``zerotuning.sink_attention`` op with the layer's log-gammas, read
  from a buffer on the attention module (``prepare_module`` puts it there, ``release_module``
  takes it off): an attribute look-up, no host sync, no new tensor.

A model loaded with ``attn_implementation="zerotuning"`` runs these functions before any
``apply``: a module without a gamma buffer, and a config that ``apply`` did not attach, get
transformers' own ``sdpa`` attention and mask with the arguments as given, so its outputs are
exactly the stock ones until a profile is applied.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..ops import BELOW_AUTOGRAD, SINK_ATTENTION_OP, sink_attention_op
from . import sinks

BACKEND_NAME = "zerotuning"
LOG_GAMMA_BITS = "zerotuning_log_gamma_bits"
_LOG_GAMMA_VIEW = "zerotuning_log_gamma_view"  # (the buffer, its float32 view), in the module's __dict__
# A float32 [num_heads] tensor requiring grad that replaces the buffer's log-gammas while set
# (``zerotuning.hf.differentiable``): a plain attribute, so the look-up is one dict read.
LOG_GAMMA_LEAF = "zerotuning_log_gamma_leaf"

# The keyword arguments the attention function accepts beyond its named ones: an allow-list, so
# that a model passing something this backend does not know (a sparse-attention index, a bias,
# learned sinks, ...) is refused instead of silently running dense attention. Checked against what
# transformers 5.18 and 4.57 pass for every tested family (docs/hf_integration.md).
# Harmless whatever their value: already applied before attention (position_ids: RoPE), or about
# other parts of the forward (caching, returned hidden states, loss normalisation, MoE logits).
_HARMLESS_KWARGS = frozenset(
    {"position_ids", "use_cache", "output_hidden_states", "output_router_logits", "return_dict", "num_items_in_batch"}
)
# Harmless only when off (None or False): what the feature is, for the refusal message.
_HARMLESS_WHEN_OFF = {
    "output_attentions": "returning attention weights (the kernel never materialises them)",
    "s_aux": "learned attention sinks (gpt-oss style)",
    "indices": "sparse top-k attention indices (DeepSeek-V3.2 / GLM-MoE-DSA style)",
    "position_bias": "an additive position bias (T5 style)",
    "head_mask": "a head mask",
}
# Packed sequences in flash-attention form (transformers' DataCollatorWithFlattening): stock sdpa
# ignores them (its mask, from position_ids, does the packing), so they are accepted when None and,
# when set, on a layer whose gammas are all 1 (stock outputs); refused otherwise, like a packed mask.
_PACKED_KWARGS = frozenset({"cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx"})


def prepare_module(module: torch.nn.Module, num_heads: int, device: torch.device) -> None:
    """Give an attention module its [num_heads] log-gamma buffer, all zeros (gamma = 1)."""
    with torch.inference_mode(False):  # a normal tensor: apply() may be called again outside inference mode
        bits = torch.zeros(num_heads, dtype=torch.int32, device=device)
    module.register_buffer(LOG_GAMMA_BITS, bits, persistent=False)
    _cache_float_view(module, bits)


def set_log_gammas(module: torch.nn.Module, log_gammas: torch.Tensor) -> None:
    """Copy float32 [num_heads] log-gammas into a prepared module's buffer, in place (compiled graphs keep it)."""
    getattr(module, LOG_GAMMA_BITS).copy_(log_gammas.view(torch.int32))


def release_module(module: torch.nn.Module) -> None:
    """Undo ``prepare_module``."""
    delattr(module, LOG_GAMMA_BITS)
    module.__dict__.pop(_LOG_GAMMA_VIEW, None)


def log_gamma_of(module: torch.nn.Module) -> torch.Tensor:
    """The float32 [num_query_heads] log-gammas of an attention module prepared by ``apply``
    (the differentiable ones while ``zerotuning.hf.differentiable.trainable_log_gammas`` is active)."""
    leaf = module.__dict__.get(LOG_GAMMA_LEAF)
    if leaf is not None:
        return leaf
    bits = module._buffers.get(LOG_GAMMA_BITS)
    if bits is None:
        raise RuntimeError(
            f"zerotuning: attention module {type(module).__name__} (layer {getattr(module, 'layer_idx', '?')}) "
            "runs with the zerotuning backend but has no gammas: zerotuning.apply() did not prepare it"
        )
    cached = module.__dict__.get(_LOG_GAMMA_VIEW)
    if cached is None or cached[0] is not bits:  # the buffer was replaced (module.to(device))
        cached = _cache_float_view(module, bits)
    return cached[1]


def _cache_float_view(module: torch.nn.Module, bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Stored as int32 bit patterns so that model.half() / .to(dtype), which cast floating
    # buffers, cannot round the float32 log-gammas. The float32 view of them shares their
    # memory (in-place updates show through it) and is made once per buffer, not once per
    # call: a view is a dispatcher call, a tenth of a decoding step's attention cost.
    cached = (bits, bits.view(torch.float32))
    module.__dict__[_LOG_GAMMA_VIEW] = cached
    return cached


def zerotuning_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D] -> ([B, Lq, Hq, D], None)."""
    # Runs once per layer and decoding step, where its Python is a measurable part of the step
    # (docs/hf_integration.md, "Model-level cost"): the usual case costs one comparison of the
    # keyword names and a few dict reads; the loops that explain a refusal run only when needed.
    packed_kwargs = None
    if dropout or not kwargs.keys() <= _HARMLESS_KWARGS:
        packed_kwargs = _refuse_unsupported(module, dropout, kwargs)
    kv_length = key.shape[-2]
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(
                f"zerotuning: attention_mask must be a tensor or None, got {type(attention_mask).__name__} "
                f"in {type(module).__name__}"
            )
        if attention_mask.shape[-1] > kv_length:
            attention_mask = attention_mask[..., :kv_length]
    kind = sinks.FULL_ATTENTION if sliding_window is None else sinks.mask_kind(sliding_window)
    sink_index, packed = sinks.recorded_for_layer(module, kind, kv_length, query.device)
    log_gamma = log_gamma_of(module)
    packed = packed or packed_kwargs
    if packed is not None:
        _refuse_packed_unless_neutral(module, log_gamma, packed)
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    # The mask function only lets transformers skip the mask where the kernel's end-aligned
    # causal diagonal equals sdpa's top-left one (one query, or as many queries as keys).
    out, _ = sink_attention_op(
        query, key, value, log_gamma, sink_index, attention_mask, bool(causal) and attention_mask is None, scaling, softcap, None
    )
    return out.transpose(1, 2).contiguous(), None


def _refuse_unsupported(module: torch.nn.Module, dropout: float, kwargs: dict) -> str | None:
    """Refuse what the kernel cannot do; return a description of packed-sequence kwargs that are set, else None."""
    packed = None
    if dropout:
        raise NotImplementedError(
            f"{_where(module)}: attention dropout {dropout} is not supported (ZeroTuning is inference-only; "
            "call model.eval() or set attention_dropout=0)"
        )
    for name, value in kwargs.items():
        if name in _HARMLESS_KWARGS:
            continue
        if name in _PACKED_KWARGS:
            if value is not None:
                packed = f"{name}= given"
            continue
        if name in _HARMLESS_WHEN_OFF:
            if value is None or value is False:
                continue
            raise NotImplementedError(
                f"{_where(module)}: {_HARMLESS_WHEN_OFF[name]} ({name}=...) is not supported; run this model without "
                "ZeroTuning or without that feature"
            )
        raise NotImplementedError(
            f"{_where(module)}: the model passed the keyword argument {name}= ({type(value).__name__}) to its attention "
            f"function, which the zerotuning backend does not know to be harmless (it accepts "
            f"{sorted(_HARMLESS_KWARGS | set(_HARMLESS_WHEN_OFF) | _PACKED_KWARGS)}); refusing rather than ignoring it"
        )
    return packed


def _refuse_packed_unless_neutral(module: torch.nn.Module, log_gamma: torch.Tensor, packed: str) -> None:
    # The kernel biases one sink per row, the row's first token: right for the row's first
    # sequence only. With every gamma 1 there is no bias, so the outputs are the stock ones.
    # (A host sync, on packed forwards only.) Differentiable log-gammas are refused whatever
    # their value: their gradients would be those of the wrong sinks.
    if LOG_GAMMA_LEAF not in module.__dict__ and not bool(log_gamma.any()):
        return
    raise NotImplementedError(
        f"{_where(module)}: packed sequences (several sequences in one batch row; {packed}) would get the sink "
        "bias on the row's first token only; expected one sequence per row with an attention_mask (e.g. a "
        "left-padded batch), or gamma 1 on every head of this layer"
    )


def _where(module: torch.nn.Module) -> str:
    owner = sinks.owner_name(module)
    layer = getattr(module, "layer_idx", "?")
    return f"zerotuning attention in {type(module).__name__} (layer {layer})" + (f" of {owner}" if owner else "")


def zerotuning_mask(
    batch_size: int,
    *,
    kv_length: int,
    kv_offset: int | torch.Tensor = 0,
    attention_mask: torch.Tensor | None = None,
    config: Any = None,
    local_size: int | None = None,
    allow_is_causal_skip: bool = True,
    **kwargs: Any,
) -> torch.Tensor | None:
    """transformers mask function: sdpa's boolean mask (or None), plus the sinks of this mask kind."""
    if config is None:
        raise RuntimeError("zerotuning: transformers called the mask function without config=; this version is unsupported")
    if "q_length" in kwargs:
        q_length, device = kwargs["q_length"], kwargs["device"]
    else:  # transformers 4.x passes cache_position instead
        q_length, device = kwargs["cache_position"].shape[0], kwargs["cache_position"].device
    end_aligned = q_length == 1 or q_length == kv_length
    mask = sdpa_mask(
        batch_size=batch_size,
        kv_length=kv_length,
        kv_offset=kv_offset,
        attention_mask=attention_mask,
        local_size=local_size,
        allow_is_causal_skip=allow_is_causal_skip and end_aligned,
        config=config,
        **kwargs,
    )
    # transformers skips the mask (None) only where no key is padding: every row's sink is then
    # position 0, found without the two tensor ops per step that read it from the padding mask.
    sink_index = sinks.sink_index_per_row(None if mask is None else attention_mask, batch_size, kv_offset, device)
    packed = None
    # Only a forward without attention mask and cache can be packed (transformers reads position_ids then).
    no_cache = q_length == kv_length and isinstance(kv_offset, int) and kv_offset == 0
    if attention_mask is None and mask is not None and no_cache:
        packed = sinks.packed_query(mask, local_size)
    sinks.record(config, sinks.mask_kind(local_size), kv_length, sink_index, packed)
    return mask


def attention_or_stock(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
):
    """The registered attention function: ZeroTuning on a module ``apply`` prepared, stock sdpa on any other.

    The usual inference call (a prepared module, no grad, not compiling, sinks recorded on this
    device, nothing packed, only harmless keyword arguments) runs inline, in one Python frame: it
    runs once per layer and decoding step, where each frame and attribute look-up was measured
    (docs/hf_integration.md, "Model-level cost"). Every other call, refusals included, goes to
    ``zerotuning_attention`` (or stock sdpa), which does the same with every check spelled out;
    the tests run both.
    """
    state = module.__dict__.get(sinks.STATE_ATTRIBUTE)
    cached = module.__dict__.get(_LOG_GAMMA_VIEW)
    entry = None if state is None else state.by_kind.get(sinks.FULL_ATTENTION if sliding_window is None else sinks.mask_kind(sliding_window))
    if (
        entry is None
        or cached is None
        or cached[0] is not module._buffers.get(LOG_GAMMA_BITS)
        or LOG_GAMMA_LEAF in module.__dict__
        or state.packed
        or dropout
        or entry[0] != key.shape[-2]
        or not kwargs.keys() <= _HARMLESS_KWARGS
        or torch.is_grad_enabled()
        or torch.compiler.is_compiling()
        or not (attention_mask is None or isinstance(attention_mask, torch.Tensor))
    ):
        return _attention_or_stock_checked(
            module, query, key, value, attention_mask,
            dropout=dropout, scaling=scaling, sliding_window=sliding_window, softcap=softcap, is_causal=is_causal, **kwargs,
        )
    sink_index = entry[1].get(query.device)
    if sink_index is None:  # layers spread by device_map: the checked path copies the sinks once per device
        sink_index = sinks.recorded(module, sinks.FULL_ATTENTION if sliding_window is None else sinks.mask_kind(sliding_window), entry[0], query.device)
    if attention_mask is not None and attention_mask.shape[-1] > entry[0]:
        attention_mask = attention_mask[..., : entry[0]]
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    with BELOW_AUTOGRAD():  # as in ops.sink_attention_op without grad
        out, _ = SINK_ATTENTION_OP(query, key, value, cached[1], sink_index, attention_mask, bool(causal) and attention_mask is None, scaling, softcap, None)
    return out.transpose(1, 2).contiguous(), None


def _attention_or_stock_checked(module: torch.nn.Module, query, key, value, attention_mask, **kwargs: Any):
    if LOG_GAMMA_BITS not in module._buffers and not sinks.is_attached_module(module):
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)
    return zerotuning_attention(module, query, key, value, attention_mask, **kwargs)


def mask_or_stock(*args: Any, **kwargs: Any):
    """The registered mask function: ZeroTuning's for a config ``apply`` attached, stock ``sdpa_mask`` for any other."""
    if not sinks.is_attached_config(kwargs.get("config")):
        return sdpa_mask(*args, **kwargs)
    return zerotuning_mask(*args, **kwargs)


def register_backend() -> None:
    """Register the attention and mask functions under ``BACKEND_NAME`` (idempotent)."""
    AttentionInterface.register(BACKEND_NAME, attention_or_stock)
    AttentionMaskInterface.register(BACKEND_NAME, mask_or_stock)


# Importing this module registers the name, so that every way in (``import zerotuning.hf``, the
# import hook in ``load_time.py``) finds ``attn_implementation="zerotuning"`` accepted.
register_backend()
