// The merge paths: one of torch's own fused attention kernels (flash-attention 2 or cuDNN)
// attends over every key except the sink (key 0) and returns its log-sum-exp; one light kernel
// then merges the sink back in with its ZeroTuning bias, exactly:
//
//   s   = scale * q.k_0 + log_gamma[h]   (-inf when causal / window hide key 0 from the query)
//   lse = log(exp(s) + exp(lse_rest)),    out = (exp(lse_rest) * out_rest + exp(s) * v_0) / exp(lse)
//
// Both weights are positive, so no error of the bf16 out_rest is amplified (unlike correcting an
// output that already contains the sink, whose error grows by 1 / (1 - (1 - gamma) p_sink)).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../sink_attention_params.h"

namespace zerotuning::cuda {

struct SinkMergeArgs {
  SinkAttentionParams p;           // q, k, v, log_gamma, out, lse and the causal / window flags
  const void* rest_out = nullptr;  // attention of query i over keys 1.. is row i - rest_query_offset
  int64_t rest_out_stride[3] = {0, 0, 0};  // batch, row, head (elements)
  const float* rest_lse = nullptr;         // its natural log-sum-exp
  int64_t rest_lse_stride[3] = {0, 0, 0};  // batch, head, row
  // Queries before this one have no row: they see no key besides the sink (cuDNN's top-left
  // causal diagonal is matched by dropping query 0 together with key 0).
  int64_t rest_query_offset = 0;
};

// Needs float16/bfloat16, head_dim % 8 == 0 and 16-byte aligned rows (the paths' rule).
void launch_sink_merge(const SinkMergeArgs& args, cudaStream_t stream);

}  // namespace zerotuning::cuda
