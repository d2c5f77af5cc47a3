"""vLLM's CUDA FlashAttention backend with ZeroTuning's sink bias, by the exact post-hoc correction.

Registered over ``FLASH_ATTN`` by the plugin on CUDA (``zerotuning.vllm.register``); written
against vLLM 0.32.0's ``vllm.v1.attention.backends.flash_attn``. A layer whose gammas are all 1
(and every layer when no profile is configured) runs vLLM's own ``FlashAttentionImpl.forward``
unchanged. A layer with some gamma != 1 calls vLLM's ``flash_attn_varlen_func`` itself, as the
base class does for decoder layers without sliding windows, asking for the log-sum-exp
(``return_softmax_lse=True``, ``[H, T]``, FA2, FA3 and FA4 alike), reads each request's position 0
(slot 0 of ``block_table[r, 0]``) from the cache views the base class uses
(``kv_cache.transpose(1, 2).split(head_size, dim=-1)``, each ``[num_blocks, block_size,
kv_heads, D]``), and corrects the output in place (``lse_correction``). The choice is made per
forward from ``ServedProfile.active``, so swapping profiles needs no reload.

Attention then runs outside CUDA graphs: with a profile configured, the metadata builder reports
no CUDA-graph support, so vLLM captures piecewise graphs around attention (a captured full graph
would freeze the per-layer choice and miss swaps). Refused on a layer with gamma != 1, with a
message naming the profile and layer: sliding windows, ALiBi, learned sinks, quantised KV caches,
decode/prefill context parallelism, non-causal or per-request causal masks, multimodal prefix
masks, R-SWA, cascade attention, speculative decoding, fused output quantisation.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.config import get_current_vllm_config
from vllm.distributed import get_tensor_model_parallel_rank
from vllm.utils.torch_utils import canonicalize_singleton_dim_strides, is_quantized_kv_cache
from vllm.v1.attention.backend import AttentionCGSupport, AttentionType
from vllm.v1.attention.backends import fa_utils
from vllm.v1.attention.backends.flash_attn import FlashAttentionBackend, FlashAttentionImpl, FlashAttentionMetadataBuilder

from . import layer_gammas
from .lse_correction import TokenSinks, correct_with_sink, gather_sinks, sink_logits, token_sinks

SUPPORTED_FA_VERSIONS = (2, 3, 4)
_SINKS_ATTRIBUTE = "_zerotuning_sinks"


def flash_attn_varlen_func(**kwargs: Any) -> Any:
    """vLLM's flash-attention entry point (``vllm.vllm_flash_attn`` on CUDA), looked up at call time."""
    function = getattr(fa_utils, "flash_attn_varlen_func", None)
    if function is None:
        raise RuntimeError("zerotuning: vLLM's flash_attn_varlen_func is not available here (it needs vLLM's CUDA build on a CUDA device)")
    return function(**kwargs)


class ZeroTuningFlashAttentionBackend(FlashAttentionBackend):
    @staticmethod
    def get_name() -> str:
        return "FLASH_ATTN"  # vLLM looks the backend up by this name

    @staticmethod
    def get_impl_cls() -> type["ZeroTuningFlashAttentionImpl"]:
        return ZeroTuningFlashAttentionImpl

    @staticmethod
    def get_builder_cls() -> type["ZeroTuningFlashAttentionMetadataBuilder"]:
        return ZeroTuningFlashAttentionMetadataBuilder


class ZeroTuningFlashAttentionMetadataBuilder(FlashAttentionMetadataBuilder):
    @classmethod
    def get_cudagraph_support(cls, vllm_config: Any, kv_cache_spec: Any) -> AttentionCGSupport:
        # A full CUDA graph would replay whichever path (stock or corrected) each layer took at capture.
        if layer_gammas.served_profile(vllm_config) is not None:
            return AttentionCGSupport.NEVER
        return super().get_cudagraph_support(vllm_config, kv_cache_spec)


class ZeroTuningFlashAttentionImpl(FlashAttentionImpl):
    zerotuning_applies_gammas = True  # the worker extension lets a swap to gamma != 1 through

    def __init__(self, num_heads, head_size, scale, num_kv_heads, alibi_slopes, sliding_window, kv_cache_dtype, *args, **kwargs):
        super().__init__(num_heads, head_size, scale, num_kv_heads, alibi_slopes, sliding_window, kv_cache_dtype, *args, **kwargs)
        vllm_config = get_current_vllm_config()
        self._served = layer_gammas.served_profile(vllm_config)
        self._layer: int | None = None
        self._log_gamma: torch.Tensor | None = None
        if self._served is None:
            return
        where = f"zerotuning profile {self._served.source}"
        if is_quantized_kv_cache(kv_cache_dtype):
            raise ValueError(
                f"{where}: kv_cache_dtype {kv_cache_dtype!r} is quantised; the vLLM plugin needs the model-dtype KV cache "
                "(kv_cache_dtype='auto')"
            )
        if self.dcp_world_size > 1 or self.pcp_world_size > 1:
            raise NotImplementedError(
                f"{where}: decode/prefill context parallelism (dcp {self.dcp_world_size}, pcp {self.pcp_world_size}) splits a "
                "request's keys over ranks, and the sink correction needs the whole log-sum-exp on one; serve without it"
            )
        if getattr(vllm_config, "speculative_config", None) is not None:
            raise NotImplementedError(f"{where}: speculative decoding is not supported with a profile (the draft model's layers would take the target's gammas)")

    def forward(self, layer, query, key, value, kv_cache, attn_metadata, output, output_scale=None, output_block_scale=None):
        if self._served is None or attn_metadata is None or self.attn_type != AttentionType.DECODER:
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output, output_scale, output_block_scale)
        if self._layer is None:
            self._bind(layer, query.device)
        if not self._served.active[self._layer]:
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output, output_scale, output_block_scale)
        self._check_supported(attn_metadata)
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError(f"zerotuning profile {self._served.source}, layer {self._layer}: fused output quantization is not supported")

        num_tokens = attn_metadata.num_actual_tokens
        key_cache, value_cache = kv_cache.transpose(1, 2).split(self.head_size, dim=-1)
        key_cache = canonicalize_singleton_dim_strides(key_cache)
        value_cache = canonicalize_singleton_dim_strides(value_cache)
        cu_seqlens_q = attn_metadata.query_start_loc
        descale_shape = (cu_seqlens_q.shape[0] - 1, self.num_kv_heads)
        q_descale = layer._q_scale.expand(descale_shape) if self.supports_quant_query_input else None
        block_table, max_seqlen_k, num_splits = attn_metadata.block_table, attn_metadata.max_seq_len, attn_metadata.max_num_splits
        if self.fa4_hd256:  # as the base class: page-aligned lengths, exact-width block tables, no split KV
            pages = -(-max_seqlen_k // fa_utils.FA4_HD256_PAGE_SIZE)
            max_seqlen_k, block_table, num_splits = pages * fa_utils.FA4_HD256_PAGE_SIZE, block_table[:, :pages], 1
        query = query[:num_tokens]
        out = output[:num_tokens]
        _, lse = flash_attn_varlen_func(
            q=query,
            k=key_cache,
            v=value_cache,
            out=out,
            cu_seqlens_q=cu_seqlens_q,
            max_seqlen_q=attn_metadata.max_query_len,
            seqused_k=attn_metadata.seq_lens,
            max_seqlen_k=max_seqlen_k,
            softmax_scale=self.scale,
            causal=True,
            alibi_slopes=None,
            window_size=[-1, -1],
            block_table=block_table,
            softcap=self.logits_soft_cap,
            scheduler_metadata=attn_metadata.scheduler_metadata,
            fa_version=self.vllm_flash_attn_version,
            q_descale=q_descale,
            k_descale=layer._k_scale.expand(descale_shape),
            v_descale=layer._v_scale.expand(descale_shape),
            num_splits=num_splits,
            return_softmax_lse=True,
        )
        sinks = self._token_sinks(attn_metadata, num_tokens)
        sink_key, sink_value = gather_sinks(key_cache, value_cache, sinks.blocks)
        logits = sink_logits(query, sink_key, self.scale, float(self.logits_soft_cap))
        out.copy_(correct_with_sink(out, lse, logits, sink_value, self._log_gamma, sinks.sees_only_sink))
        return output

    def _bind(self, layer, device: torch.device) -> None:
        index = layer_gammas.layer_index(layer.layer_name)
        self._log_gamma = self._served.layer_view(index, self.num_heads, get_tensor_model_parallel_rank(), device=device)
        self._layer = index

    @staticmethod
    def _token_sinks(attn_metadata, num_tokens: int) -> TokenSinks:
        # Once per step and KV-cache group: the layers of a group share the step's metadata. Keyed by the
        # tensors it was computed from, since vLLM copies metadata objects with another block table.
        key = (attn_metadata.block_table, attn_metadata.query_start_loc, attn_metadata.seq_lens, num_tokens)
        cached = getattr(attn_metadata, _SINKS_ATTRIBUTE, None)
        if cached is not None and all(a is b for a, b in zip(cached[0][:3], key[:3])) and cached[0][3] == num_tokens:
            return cached[1]
        sinks = token_sinks(attn_metadata.query_start_loc, attn_metadata.seq_lens, attn_metadata.block_table, num_tokens)
        setattr(attn_metadata, _SINKS_ATTRIBUTE, (key, sinks))
        return sinks

    def _check_supported(self, attn_metadata) -> None:
        where = f"zerotuning profile {self._served.source}, layer {self._layer}"
        if tuple(self.sliding_window) != (-1, -1):
            raise ValueError(f"{where}: a sliding-window layer (window {self.sliding_window}); gamma != 1 is supported only on full-attention layers")
        if self.alibi_slopes is not None or self.sinks is not None:
            raise ValueError(f"{where}: ALiBi slopes and learned attention sinks are not supported with gamma != 1")
        if self.vllm_flash_attn_version not in SUPPORTED_FA_VERSIONS:
            raise NotImplementedError(f"{where}: FlashAttention version {self.vllm_flash_attn_version!r} (supported: {SUPPORTED_FA_VERSIONS})")
        if attn_metadata.causal is not True:
            raise NotImplementedError(f"{where}: non-causal or per-request causal attention ({type(attn_metadata.causal).__name__}) is not supported")
        if getattr(attn_metadata, "mm_prefix_query_range_tensor", None) is not None or getattr(attn_metadata, "rswa_prefix_lens", None) is not None:
            raise NotImplementedError(f"{where}: multimodal prefix masks and R-SWA are not supported with gamma != 1")
        if getattr(attn_metadata, "use_cascade", False):
            raise NotImplementedError(f"{where}: cascade attention is not supported with gamma != 1")
