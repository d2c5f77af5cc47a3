#include "sink_attention_backward_call.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace zerotuning {
namespace {

constexpr const char* kOp = "zerotuning.sink_attention_backward: ";

void check_like(const at::Tensor& t, const char* name, at::IntArrayRef shape, at::ScalarType dtype,
                const at::Tensor& q) {
  TORCH_CHECK(t.sizes() == shape, kOp, name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, kOp, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == q.device(), kOp, name, " is on ", t.device(), " but q is on ",
              q.device(), "; expected all tensors on one device");
}

}  // namespace

SinkAttentionBackwardCall prepare_sink_attention_backward(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& log_gamma, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& sink_index,
    const std::optional<at::Tensor>& attn_mask, bool is_causal, std::optional<double> scale,
    std::optional<double> softcap, std::optional<int64_t> sliding_window) {
  SinkAttentionBackwardCall call;
  call.forward = prepare_sink_attention(q, k, v, log_gamma, sink_index, attn_mask, is_causal,
                                        scale, softcap, sliding_window, /*check_values=*/true);
  const at::IntArrayRef rows = q.sizes().slice(0, 3);
  check_like(out, "out", q.sizes(), q.scalar_type(), q);
  check_like(lse, "lse", rows, at::kFloat, q);
  check_like(grad_out, "grad_out", q.sizes(), q.scalar_type(), q);
  if (grad_lse.has_value()) check_like(*grad_lse, "grad_lse", rows, at::kFloat, q);

  SinkAttentionBackwardParams& p = call.params;
  p.forward = call.forward.params;
  call.out = out.contiguous();
  call.lse = lse.contiguous();
  call.grad_out = grad_out.contiguous();
  p.forward.out = call.out.data_ptr();
  p.forward.lse = call.lse.data_ptr<float>();
  p.grad_out = call.grad_out.data_ptr();
  if (grad_lse.has_value()) {
    call.grad_lse = grad_lse->contiguous();
    p.grad_lse = call.grad_lse.data_ptr<float>();
  }
  // The kernel accumulates into these, and leaves keys no query sees at zero.
  call.grad_q = at::zeros(q.sizes(), q.options());
  call.grad_k = at::zeros(k.sizes(), k.options());
  call.grad_v = at::zeros(v.sizes(), v.options());
  call.grad_log_gamma = at::zeros({log_gamma.size(0)}, log_gamma.options());
  p.grad_q = call.grad_q.data_ptr();
  p.grad_k = call.grad_k.data_ptr();
  p.grad_v = call.grad_v.data_ptr();
  p.grad_log_gamma = call.grad_log_gamma.data_ptr<float>();
  return call;
}

}  // namespace zerotuning
