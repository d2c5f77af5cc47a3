// CPU implementation of torch.ops.zerotuning.sink_attention.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "../sink_attention_call.h"
#include "sink_attention_cpu_kernel.h"

namespace zerotuning {
namespace {

std::tuple<at::Tensor, at::Tensor> sink_attention_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& log_gamma,
    const std::optional<at::Tensor>& sink_index, const std::optional<at::Tensor>& attn_mask,
    bool is_causal, std::optional<double> scale, std::optional<double> softcap,
    std::optional<int64_t> sliding_window) {
  static const bool isa_ok = cpu::cpu_supports_compiled_isa();
  TORCH_CHECK(isa_ok, "zerotuning.sink_attention: this build's CPU kernel uses ",
              cpu::compiled_isa(),
              " instructions, which this CPU lacks; rebuild zerotuning on this machine");
  SinkAttentionCall call = prepare_sink_attention(q, k, v, log_gamma, sink_index, attn_mask,
                                                  is_causal, scale, softcap, sliding_window,
                                                  /*check_values=*/true);
  cpu::sink_attention_forward(call.params);
  return {call.out, call.lse};
}

}  // namespace
}  // namespace zerotuning

TORCH_LIBRARY_IMPL(zerotuning, CPU, m) {
  m.impl("sink_attention", &zerotuning::sink_attention_cpu);
}
