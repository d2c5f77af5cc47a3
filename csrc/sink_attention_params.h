// Everything a sink-attention kernel needs, as plain pointers and strides: no ATen types, so the
// CPU and CUDA kernels and the Catch2 tests all share one description of a call.
#pragma once

#include <cstdint>

namespace zerotuning {

enum class ElementType : int { Float32, Float16, BFloat16 };

// How attn_mask is stored. Bool: true = attend. Float kinds: additive, and a value at or below
// the dtype's lowest finite number (or -inf) hides the key, as HuggingFace writes masks.
enum class MaskKind : int { None, Bool, Float32, Float16, BFloat16 };

struct SinkAttentionParams {
  int64_t batch = 0;
  int64_t heads_q = 0;
  int64_t heads_kv = 0;
  int64_t len_q = 0;
  int64_t len_k = 0;
  int64_t head_dim = 0;

  ElementType element_type = ElementType::Float32;
  const void* q = nullptr;  // [B, Hq, Lq, D], last dim contiguous
  const void* k = nullptr;  // [B, Hkv, Lk, D], last dim contiguous
  const void* v = nullptr;  // [B, Hkv, Lk, D], last dim contiguous
  void* out = nullptr;      // [B, Hq, Lq, D], contiguous, same element type
  float* lse = nullptr;     // [B, Hq, Lq], contiguous
  int64_t q_stride[3] = {0, 0, 0};  // batch, head, position (elements)
  int64_t k_stride[3] = {0, 0, 0};
  int64_t v_stride[3] = {0, 0, 0};

  const float* log_gamma = nullptr;     // [Hq]
  const int64_t* sink_index = nullptr;  // [B], -1 = no sink; nullptr = first key the mask shows

  MaskKind mask_kind = MaskKind::None;
  const void* mask = nullptr;
  int64_t mask_stride[4] = {0, 0, 0, 0};  // broadcast dims have stride 0

  bool is_causal = false;      // diagonal aligned to the end of the keys
  float scale = 1.0f;
  float softcap = 0.0f;        // 0 = no capping
  int64_t sliding_window = 0;  // 0 = no window; else query at p sees keys j > p - window
};

}  // namespace zerotuning
