// CPU implementation of torch.ops.zerotuning.sink_attention_backward (the op's autograd
// formula calls it; zerotuning/ops.py registers that).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "../sink_attention_backward_call.h"
#include "sink_attention_backward_kernel.h"

namespace zerotuning {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sink_attention_backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& log_gamma, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& sink_index,
    const std::optional<at::Tensor>& attn_mask, bool is_causal, std::optional<double> scale,
    std::optional<double> softcap, std::optional<int64_t> sliding_window) {
  SinkAttentionBackwardCall call =
      prepare_sink_attention_backward(grad_out, grad_lse, q, k, v, log_gamma, out, lse, sink_index,
                                      attn_mask, is_causal, scale, softcap, sliding_window);
  cpu::sink_attention_backward(call.params);
  return {call.grad_q, call.grad_k, call.grad_v, call.grad_log_gamma};
}

}  // namespace
}  // namespace zerotuning

TORCH_LIBRARY_IMPL(zerotuning, CPU, m) {
  m.impl("sink_attention_backward", &zerotuning::sink_attention_backward_cpu);
}
