// The boundary of the backward op: the forward's arguments are checked as the forward checks
// them, and the saved results and incoming gradients against the shapes the forward produced.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "sink_attention_backward_params.h"
#include "sink_attention_call.h"

namespace zerotuning {

struct SinkAttentionBackwardCall {
  SinkAttentionBackwardParams params;
  SinkAttentionCall forward;  // keeps the forward's inputs alive
  at::Tensor out, lse, grad_out, grad_lse, grad_q, grad_k, grad_v, grad_log_gamma;
};

SinkAttentionBackwardCall prepare_sink_attention_backward(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& log_gamma, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& sink_index,
    const std::optional<at::Tensor>& attn_mask, bool is_causal, std::optional<double> scale,
    std::optional<double> softcap, std::optional<int64_t> sliding_window);

}  // namespace zerotuning
