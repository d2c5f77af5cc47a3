"""vLLM's CPU attention backend with ZeroTuning's sink bias on the layers whose gammas are not all 1.

Registered over ``CPU_ATTN`` by the plugin (``zerotuning.vllm.register``). A layer whose gammas
are all 1 (and every layer when no profile is configured) runs vLLM's own kernel unchanged; a
layer with some gamma != 1 runs ``torch.ops.zerotuning.sink_attention_paged`` (the C++ op of
``csrc/cpu/sink_attention_paged_kernel.cpp``) over the same cache. The choice is made per forward
from ``ServedProfile.active``, so swapping profiles needs no reload.
"""

from __future__ import annotations

import torch
from vllm.config import get_current_vllm_config
from vllm.distributed import get_tensor_model_parallel_rank
from vllm.utils.torch_utils import is_quantized_kv_cache
from vllm.v1.attention.backend import AttentionType
from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend, CPUAttentionBackendImpl

from .. import _C  # noqa: F401  (loading the library registers torch.ops.zerotuning)
from . import layer_gammas

# Cache layouts the op reads: keys [D, block] and values [block, D] per block and KV head.
SUPPORTED_ISAS = ("vec", "vec16")
SINK_ATTENTION_PAGED = torch.ops.zerotuning.sink_attention_paged.default


class ZeroTuningCPUAttentionBackend(CPUAttentionBackend):
    @staticmethod
    def get_name() -> str:
        return "CPU_ATTN"  # vLLM looks the backend up by this name

    @staticmethod
    def get_impl_cls() -> type["ZeroTuningCPUAttentionImpl"]:
        return ZeroTuningCPUAttentionImpl


class ZeroTuningCPUAttentionImpl(CPUAttentionBackendImpl):
    zerotuning_applies_gammas = True

    def __init__(self, num_heads, head_size, scale, num_kv_heads, alibi_slopes, sliding_window, kv_cache_dtype, *args, **kwargs):
        super().__init__(num_heads, head_size, scale, num_kv_heads, alibi_slopes, sliding_window, kv_cache_dtype, *args, **kwargs)
        self._served = layer_gammas.served_profile(get_current_vllm_config())
        if self._served is not None and is_quantized_kv_cache(kv_cache_dtype):
            raise ValueError(
                f"zerotuning profile {self._served.source}: kv_cache_dtype {kv_cache_dtype!r} is quantised; the vLLM "
                "plugin needs the model-dtype KV cache (kv_cache_dtype='auto')"
            )
        self._layer: int | None = None
        self._log_gamma: torch.Tensor | None = None

    def forward(self, layer, query, key, value, kv_cache, attn_metadata, output, output_scale=None, output_block_scale=None):
        if self._served is None or attn_metadata is None or self.attn_type != AttentionType.DECODER:
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output, output_scale, output_block_scale)
        if self._layer is None:
            self._bind(layer)
        if not self._served.active[self._layer]:
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output, output_scale, output_block_scale)
        self._check_supported(layer)
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError("zerotuning: fused output quantization is not supported")
        if attn_metadata.causal is not True or attn_metadata.dynamic_causal is not None:
            raise NotImplementedError(f"zerotuning profile {self._served.source}, layer {self._layer}: gamma != 1 needs causal attention")
        tokens = attn_metadata.num_actual_tokens  # past them: padding, left alone as vLLM's kernel does
        SINK_ATTENTION_PAGED(
            query[:tokens], kv_cache, attn_metadata.block_table, attn_metadata.query_start_loc, attn_metadata.seq_lens,
            self._log_gamma, self.scale, float(self.logits_soft_cap), output[:tokens],
        )
        return output

    def _bind(self, layer) -> None:
        index = layer_gammas.layer_index(layer.layer_name)
        self._log_gamma = self._served.layer_view(index, self.num_heads, get_tensor_model_parallel_rank())
        self._layer = index

    def _check_supported(self, layer) -> None:
        where = f"zerotuning profile {self._served.source}, layer {self._layer}"
        if self.sliding_window != -1:
            raise ValueError(f"{where}: a sliding-window layer (window {self.sliding_window}); gamma != 1 is supported only on full-attention layers")
        if self.alibi_slopes is not None or self.sinks is not None:
            raise ValueError(f"{where}: ALiBi slopes and learned attention sinks are not supported with gamma != 1")
        if getattr(layer, "isa", None) not in SUPPORTED_ISAS:
            raise NotImplementedError(
                f"{where}: vLLM chose the CPU attention ISA {getattr(layer, 'isa', None)!r}, whose cache layout the plugin does not "
                f"read (supported: {SUPPORTED_ISAS}; AMX is chosen for bfloat16 on AMX CPUs: serve in float32 or float16 there)"
            )
