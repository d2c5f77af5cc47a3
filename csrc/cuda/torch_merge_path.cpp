// Host side of the merge paths: one of torch's fused attention kernels over keys 1.. (both
// return the log-sum-exp next to the output), then the merge kernel adds the sink back exactly.
#include <ATen/ATen.h>
#include <ATen/SDPBackend.h>
#include <ATen/ops/_flash_attention_forward.h>
#include <ATen/ops/_fused_sdp_choice.h>
#include <ATen/ops/_scaled_dot_product_cudnn_attention.h>

#include <optional>

#include "run_paths.h"
#include "sink_merge.h"

namespace zerotuning::cuda {
namespace {

struct RestInputs {
  at::Tensor q, k, v;        // cuDNN's [batch, heads, len, head_dim] layout
  int64_t query_offset = 0;  // query i is row i - query_offset of the rest
};

// Keys 1.. for cuDNN. Its causal diagonal is top-left; dropping query 0 together with key 0
// keeps the problem square, where top-left equals this op's end-aligned diagonal (query i then
// sees keys 1..i). Query 0 sees only the sink, which the merge adds.
RestInputs cudnn_rest_inputs(const SinkAttentionCall& call) {
  const SinkAttentionParams& p = call.params;
  const int64_t offset = p.is_causal ? 1 : 0;
  return {call.q.narrow(2, offset, p.len_q - offset), call.k.narrow(2, 1, p.len_k - 1),
          call.v.narrow(2, 1, p.len_k - 1), offset};
}

void check_rest_shapes(const at::Tensor& out, const at::Tensor& lse, const SinkAttentionParams& p,
                       int64_t rows, const char* kernel) {
  TORCH_CHECK(out.dim() == 4 && out.numel() == p.batch * p.heads_q * rows * p.head_dim && lse.dim() >= 3 &&
                  lse.size(0) == p.batch && lse.size(1) == p.heads_q && lse.size(2) == rows &&
                  lse.scalar_type() == at::kFloat,
              "zerotuning: torch's ", kernel, " attention returned out ", out.sizes(), " and lse ", lse.sizes(),
              " ", lse.scalar_type(), "; expected ", p.batch * p.heads_q * rows * p.head_dim,
              " output elements and a float lse [", p.batch, ", ", p.heads_q, ", ", rows, ", ...]");
}

}  // namespace

bool torch_sdpa_picks_cudnn_for_rest(const SinkAttentionCall& call) {
  const RestInputs rest = cudnn_rest_inputs(call);
  const int64_t backend =
      at::_fused_sdp_choice(rest.q, rest.k, rest.v, std::nullopt, /*dropout_p=*/0.0, call.params.is_causal,
                            static_cast<double>(call.params.scale), /*enable_gqa=*/true);
  return backend == static_cast<int64_t>(at::SDPBackend::cudnn_attention);
}

void run_sink_merge(const SinkAttentionCall& call, RestKernel rest, cudaStream_t stream) {
  const SinkAttentionParams& p = call.params;
  SinkMergeArgs args;
  args.p = p;
  at::Tensor rest_out, rest_lse;
  if (rest == RestKernel::Flash) {
    // Flash takes [batch, len, heads, head_dim] views and needs no K/V repeat for GQA. It aligns
    // causal and local windows to the end of the keys, like this op: query p sees keys j > p - W,
    // i.e. j' = j - 1 >= p - W among the rest, a left window of W - 1.
    std::optional<int64_t> window_left;
    if (p.sliding_window > 0) window_left = p.sliding_window - 1;
    const auto flash = at::_flash_attention_forward(
        call.q.transpose(1, 2), call.k.narrow(2, 1, p.len_k - 1).transpose(1, 2),
        call.v.narrow(2, 1, p.len_k - 1).transpose(1, 2), std::nullopt, std::nullopt, p.len_q, p.len_k - 1,
        /*dropout_p=*/0.0, p.is_causal, /*return_debug_mask=*/false, static_cast<double>(p.scale), window_left,
        /*window_size_right=*/std::nullopt);
    rest_out = std::get<0>(flash);  // [batch, len_q, heads, head_dim]
    rest_lse = std::get<1>(flash);  // [batch, heads, len_q]
    check_rest_shapes(rest_out, rest_lse, p, p.len_q, "flash");
    args.rest_out_stride[0] = rest_out.stride(0);
    args.rest_out_stride[1] = rest_out.stride(1);
    args.rest_out_stride[2] = rest_out.stride(2);
  } else {
    const RestInputs inputs = cudnn_rest_inputs(call);
    const auto cudnn = at::_scaled_dot_product_cudnn_attention(
        inputs.q, inputs.k, inputs.v, std::nullopt, /*compute_log_sumexp=*/true, /*dropout_p=*/0.0, p.is_causal,
        /*return_debug_mask=*/false, static_cast<double>(p.scale));
    rest_out = std::get<0>(cudnn);  // [batch, heads, rows, head_dim]
    rest_lse = std::get<1>(cudnn);  // [batch, heads, rows(, 1)]
    check_rest_shapes(rest_out, rest_lse, p, p.len_q - inputs.query_offset, "cuDNN");
    args.rest_out_stride[0] = rest_out.stride(0);
    args.rest_out_stride[1] = rest_out.stride(2);
    args.rest_out_stride[2] = rest_out.stride(1);
    args.rest_query_offset = inputs.query_offset;
  }
  args.rest_out = rest_out.data_ptr();
  args.rest_lse = rest_lse.data_ptr<float>();
  for (int d = 0; d < 3; ++d) args.rest_lse_stride[d] = rest_lse.stride(d);
  launch_sink_merge(args, stream);
}

}  // namespace zerotuning::cuda
