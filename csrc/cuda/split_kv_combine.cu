// Combines the partial results of the splits of the split-KV kernel (flash-decoding's second
// step) and dispatches both kernels on the element type.
#include <c10/cuda/CUDAException.h>

#include "device_math.cuh"
#include "split_kv_kernel.cuh"

namespace zerotuning::cuda {
namespace {

constexpr int kCombineWarps = 4;

// One warp per output row: weight of split s = exp(max_s - max), then
// out = sum_s weight_s * partial_s / sum_s weight_s * sum_s and lse = max + log(sum).
template <typename T>
__global__ void __launch_bounds__(kCombineWarps * 32) split_kv_combine_kernel(const SplitKvArgs args,
                                                                             int bucket) {
  __shared__ float weights[kCombineWarps][kSplitKvMaxSplits];
  const SinkAttentionParams& p = args.p;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int64_t total_rows = p.batch * p.heads_q * p.len_q;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kCombineWarps + warp;
  if (row >= total_rows) return;  // whole warp leaves together

  float max_all = kNegInf;
  bool poisoned = false;  // a split saw a NaN or +inf logit (its max is NaN)
  for (int s = lane; s < args.num_splits; s += 32) {
    const float split_max = args.partial_max[s * total_rows + row];
    poisoned |= isnan(split_max);
    max_all = fmaxf(max_all, split_max);
  }
  max_all = warp_max(max_all);
  poisoned = __any_sync(0xffffffffu, poisoned);
  T* out = static_cast<T*>(p.out) + row * p.head_dim;
  if (poisoned) {
    for (int col = lane; col < p.head_dim; col += 32) out[col] = from_float<T>(kNaN);
    if (lane == 0) p.lse[row] = kNaN;
    return;
  }
  if (max_all == kNegInf) {  // the row sees no key: zeros and lse = -inf
    for (int col = lane; col < p.head_dim; col += 32) out[col] = from_float<T>(0.0f);
    if (lane == 0) p.lse[row] = kNegInf;
    return;
  }
  float sum = 0.0f;
  for (int s = lane; s < args.num_splits; s += 32) {
    const float weight = expf(args.partial_max[s * total_rows + row] - max_all);  // 0 for -inf
    weights[warp][s] = weight;
    sum += weight * args.partial_sum[s * total_rows + row];
  }
  sum = warp_sum(sum);
  __syncwarp();
  const float inverse = 1.0f / sum;  // > 0: the split holding max_all has sum >= 1
  for (int col = lane; col < p.head_dim; col += 32) {
    float value = 0.0f;
    for (int s = 0; s < args.num_splits; ++s) {
      value = fmaf(weights[warp][s], args.partial_out[(s * total_rows + row) * bucket + col], value);
    }
    out[col] = from_float<T>(value * inverse);
  }
  if (lane == 0) p.lse[row] = max_all + logf(sum);
}

template <typename T>
void launch_combine_typed(const SplitKvArgs& args, cudaStream_t stream) {
  const int64_t total_rows = args.p.batch * args.p.heads_q * args.p.len_q;
  const int64_t blocks = (total_rows + kCombineWarps - 1) / kCombineWarps;
  split_kv_combine_kernel<T><<<static_cast<unsigned>(blocks), kCombineWarps * 32, 0, stream>>>(
      args, split_kv_head_dim_bucket(args.p.head_dim));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void launch_split_kv(const SplitKvArgs& args, cudaStream_t stream) {
  switch (args.p.element_type) {
    case ElementType::Float32: launch_split_kv_typed<float>(args, stream); break;
    case ElementType::Float16: launch_split_kv_typed<__half>(args, stream); break;
    case ElementType::BFloat16: launch_split_kv_typed<__nv_bfloat16>(args, stream); break;
  }
}

int split_kv_blocks_per_sm(ElementType type, int bucket) {
  switch (type) {
    case ElementType::Float32: return split_kv_blocks_per_sm_typed<float>(bucket);
    case ElementType::Float16: return split_kv_blocks_per_sm_typed<__half>(bucket);
    case ElementType::BFloat16: return split_kv_blocks_per_sm_typed<__nv_bfloat16>(bucket);
  }
  return 0;
}

void launch_split_kv_combine(const SplitKvArgs& args, cudaStream_t stream) {
  TORCH_CHECK(args.num_splits <= kSplitKvMaxSplits, "zerotuning: split_kv planned ", args.num_splits,
              " splits, more than the combine kernel's ", kSplitKvMaxSplits);
  switch (args.p.element_type) {
    case ElementType::Float32: launch_combine_typed<float>(args, stream); break;
    case ElementType::Float16: launch_combine_typed<__half>(args, stream); break;
    case ElementType::BFloat16: launch_combine_typed<__nv_bfloat16>(args, stream); break;
  }
}

}  // namespace zerotuning::cuda
