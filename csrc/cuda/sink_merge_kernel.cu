#include <c10/cuda/CUDAException.h>
#include <c10/macros/Macros.h>

#include "device_math.cuh"
#include "sink_merge.h"

namespace zerotuning::cuda {
namespace {

constexpr int kMergeThreads = 256;

// A group of `threads_per_row` lanes (a power of two) handles one output row, 8 elements per
// lane: dot product with the sink key, then the weighted merge.
template <typename T>
__global__ void __launch_bounds__(kMergeThreads) sink_merge_kernel(const SinkMergeArgs args,
                                                                    int threads_per_row) {
  const SinkAttentionParams& p = args.p;
  const int lane = threadIdx.x % 32;
  const int64_t warp_index = (static_cast<int64_t>(blockIdx.x) * kMergeThreads + threadIdx.x) / 32;
  const int64_t row = warp_index * (32 / threads_per_row) + lane / threads_per_row;
  const int chunk = lane % threads_per_row;
  const int64_t total_rows = p.batch * p.heads_q * p.len_q;
  const bool row_active = row < total_rows;
  const bool active = row_active && chunk * 8 < p.head_dim;

  const int64_t i = row % p.len_q;
  const int64_t h = (row / p.len_q) % p.heads_q;
  const int64_t b = row / (p.len_q * p.heads_q);
  const int64_t hkv = h / (p.heads_q / p.heads_kv);
  const int64_t k_offset = b * p.k_stride[0] + hkv * p.k_stride[1] + chunk * 8;  // key 0
  const int64_t v_offset = b * p.v_stride[0] + hkv * p.v_stride[1] + chunk * 8;

  float dot = 0.0f;
  if (active) {
    float q_values[8], k_values[8];
    chunk_to_float<T>(*reinterpret_cast<const uint4*>(static_cast<const T*>(p.q) + b * p.q_stride[0] +
                                                      h * p.q_stride[1] + i * p.q_stride[2] + chunk * 8),
                      q_values);
    chunk_to_float<T>(*reinterpret_cast<const uint4*>(static_cast<const T*>(p.k) + k_offset), k_values);
#pragma unroll
    for (int e = 0; e < 8; ++e) dot = fmaf(q_values[e], k_values[e], dot);
  }
  // Every lane takes part in the shuffles; lanes past head_dim or past the last row add 0.
  for (int offset = threads_per_row / 2; offset > 0; offset /= 2) {
    dot += __shfl_xor_sync(0xffffffffu, dot, offset);
  }

  const int64_t pos = i + p.len_k - p.len_q;  // absolute position of the query
  const bool sees_sink = (!p.is_causal || pos >= 0) && (p.sliding_window == 0 || pos < p.sliding_window);
  float log_gamma = 0.0f;
  float sink_logit = kNegInf;
  if (row_active) {
    log_gamma = p.log_gamma[h];
    CUDA_KERNEL_ASSERT_MSG(isfinite(log_gamma),
                           "zerotuning.sink_attention: log_gamma must be finite (log of a gamma > 0)");
    if (sees_sink) sink_logit = dot * p.scale + log_gamma;
  }
  // A NaN or +inf logit of a visible key poisons the row (output and lse NaN), as on the other
  // paths. The rest's kernels report such a row by a NaN lse, or (flash) by lse = +inf, which
  // flash also writes for a row that saw no key or only -inf logits: then its output tells them
  // apart (NaN when poisoned, zeros otherwise).
  bool poisoned = row_active && poisons(sink_logit);
  const int64_t rest_row = i - args.rest_query_offset;
  int64_t rest_lo = 1, rest_hi = p.len_k - 1;  // the rest's keys this query sees, by position
  if (p.sliding_window > 0) rest_lo = max(rest_lo, pos - p.sliding_window + 1);
  if (p.is_causal) rest_hi = min(rest_hi, pos);
  const bool rest_sees_keys = rest_row >= 0 && rest_lo <= rest_hi;
  float rest_lse = kNegInf;
  bool read_rest = false;
  float rest[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  if (row_active && rest_sees_keys) {
    rest_lse = args.rest_lse[b * args.rest_lse_stride[0] + h * args.rest_lse_stride[1] +
                             rest_row * args.rest_lse_stride[2]];
    poisoned |= isnan(rest_lse);
    read_rest = !poisoned && rest_lse > kNegInf;
  }
  bool rest_has_nan = false;
  if (read_rest && active) {
    chunk_to_float<T>(*reinterpret_cast<const uint4*>(
                          static_cast<const T*>(args.rest_out) + b * args.rest_out_stride[0] +
                          rest_row * args.rest_out_stride[1] + h * args.rest_out_stride[2] + chunk * 8),
                      rest);
#pragma unroll
    for (int e = 0; e < 8; ++e) rest_has_nan |= isnan(rest[e]);
  }
  // The row's lanes agree on whether its rest output holds a NaN (every lane shuffles).
  int any_nan = rest_has_nan ? 1 : 0;
  for (int offset = threads_per_row / 2; offset > 0; offset /= 2) {
    any_nan |= __shfl_xor_sync(0xffffffffu, any_nan, offset);
  }
  if (!row_active) return;
  if (rest_lse == kPosInf) {
    poisoned |= any_nan != 0;
    rest_lse = kNegInf;  // not poisoned: no key of the rest has any weight
    read_rest = false;
  }

  T* out = static_cast<T*>(p.out) + row * p.head_dim;
  if (poisoned) {
    if (active) {
      const float nans[8] = {kNaN, kNaN, kNaN, kNaN, kNaN, kNaN, kNaN, kNaN};
      *reinterpret_cast<uint4*>(out + chunk * 8) = chunk_from_float<T>(nans);
    }
    if (chunk == 0) p.lse[row] = kNaN;
    return;
  }
  const float max_logit = fmaxf(sink_logit, rest_lse);
  if (max_logit == kNegInf) {  // the query sees no key at all (or only -inf logits): zeros, lse = -inf
    if (active) {
      const float zeros[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      *reinterpret_cast<uint4*>(out + chunk * 8) = chunk_from_float<T>(zeros);
    }
    if (chunk == 0) p.lse[row] = kNegInf;
    return;
  }
  const float sink_weight = expf(sink_logit - max_logit);
  const float rest_weight = expf(rest_lse - max_logit);
  const float total = sink_weight + rest_weight;
  if (active) {
    float merged[8];
    chunk_to_float<T>(*reinterpret_cast<const uint4*>(static_cast<const T*>(p.v) + v_offset), merged);
#pragma unroll
    for (int e = 0; e < 8; ++e) merged[e] *= sink_weight;
    if (read_rest) {  // never read the rest's output when it saw no key
#pragma unroll
      for (int e = 0; e < 8; ++e) merged[e] = fmaf(rest_weight, rest[e], merged[e]);
    }
    const float inverse = 1.0f / total;
#pragma unroll
    for (int e = 0; e < 8; ++e) merged[e] *= inverse;
    *reinterpret_cast<uint4*>(out + chunk * 8) = chunk_from_float<T>(merged);
  }
  if (chunk == 0) p.lse[row] = max_logit + logf(total);
}

template <typename T>
void launch_typed(const SinkMergeArgs& args, cudaStream_t stream) {
  int threads_per_row = 1;
  while (threads_per_row * 8 < args.p.head_dim) threads_per_row *= 2;
  const int64_t total_rows = args.p.batch * args.p.heads_q * args.p.len_q;
  const int64_t rows_per_block = kMergeThreads / threads_per_row;
  const int64_t blocks = (total_rows + rows_per_block - 1) / rows_per_block;
  sink_merge_kernel<T><<<static_cast<unsigned>(blocks), kMergeThreads, 0, stream>>>(args, threads_per_row);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void launch_sink_merge(const SinkMergeArgs& args, cudaStream_t stream) {
  switch (args.p.element_type) {
    case ElementType::Float16: launch_typed<__half>(args, stream); break;
    case ElementType::BFloat16: launch_typed<__nv_bfloat16>(args, stream); break;
    case ElementType::Float32:
      TORCH_CHECK(false, "zerotuning: the merge paths take float16/bfloat16 only (the path rule forbids float32)");
  }
}

}  // namespace zerotuning::cuda
