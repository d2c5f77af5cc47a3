// What the sink-attention backward kernel needs beyond the forward's description of the call.
#pragma once

#include "sink_attention_params.h"

namespace zerotuning {

struct SinkAttentionBackwardParams {
  // The forward call as it ran; forward.out and forward.lse hold the forward's saved results.
  SinkAttentionParams forward;
  const void* grad_out = nullptr;  // [B, Hq, Lq, D], contiguous, the forward's element type
  const float* grad_lse = nullptr;  // [B, Hq, Lq], contiguous; nullptr = no gradient into lse
  // Outputs, zero-filled by the caller, contiguous, the forward's element type.
  void* grad_q = nullptr;           // [B, Hq, Lq, D]
  void* grad_k = nullptr;           // [B, Hkv, Lk, D]
  void* grad_v = nullptr;           // [B, Hkv, Lk, D]
  float* grad_log_gamma = nullptr;  // [Hq]
};

}  // namespace zerotuning
