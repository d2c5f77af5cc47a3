// The boundary of the op: every argument is checked here, once, with a message that names it,
// what was given and what was expected; then the kernel parameters are filled in. Kernels never
// re-validate.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "sink_attention_params.h"

namespace zerotuning {

struct SinkAttentionCall {
  SinkAttentionParams params;
  // Keep alive whatever params points into (inputs made last-dim contiguous, outputs).
  at::Tensor q, k, v, log_gamma, sink_index, mask, out, lse;
};

// check_values: also read tensor values (log_gamma finite, sink_index in range). The CUDA path
// passes false: reading device memory there would add a host sync to every attention call.
SinkAttentionCall prepare_sink_attention(const at::Tensor& q, const at::Tensor& k,
                                         const at::Tensor& v, const at::Tensor& log_gamma,
                                         const std::optional<at::Tensor>& sink_index,
                                         const std::optional<at::Tensor>& attn_mask,
                                         bool is_causal, std::optional<double> scale,
                                         std::optional<double> softcap,
                                         std::optional<int64_t> sliding_window,
                                         bool check_values);

}  // namespace zerotuning
