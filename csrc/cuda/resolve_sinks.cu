#include "resolve_sinks.h"

#include <c10/cuda/CUDAException.h>

#include "device_math.cuh"

namespace zerotuning::cuda {
namespace {

constexpr int kResolveThreads = 256;

// One block per batch row; each warp scans mask rows (head, query) 32 keys at a time and stops
// at the first visible key or at the best key any warp has found so far.
template <typename M>
__global__ void __launch_bounds__(kResolveThreads) resolve_sinks_kernel(const SinkAttentionParams p,
                                                                       int64_t* sinks) {
  __shared__ unsigned long long first_visible;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int64_t b = blockIdx.x;
  if (threadIdx.x == 0) first_visible = static_cast<unsigned long long>(p.len_k);
  __syncthreads();

  // A mask broadcast over heads or queries has one row there, not heads_q or len_q.
  const int64_t heads = p.mask_stride[1] == 0 ? 1 : p.heads_q;
  const int64_t queries = p.mask_stride[2] == 0 ? 1 : p.len_q;
  const M* mask = static_cast<const M*>(p.mask) + b * p.mask_stride[0];
  for (int64_t row = warp; row < heads * queries; row += kResolveThreads / 32) {
    const M* mask_row = mask + (row / queries) * p.mask_stride[1] + (row % queries) * p.mask_stride[2];
    for (int64_t j0 = 0;; j0 += 32) {
      // Lane 0 reads the shared bound so the whole warp agrees on when to stop.
      unsigned long long bound = 0;
      if (lane == 0) bound = *static_cast<volatile unsigned long long*>(&first_visible);
      bound = __shfl_sync(0xffffffffu, bound, 0);
      if (static_cast<unsigned long long>(j0) >= bound) break;
      const int64_t j = j0 + lane;
      const bool visible = static_cast<unsigned long long>(j) < bound &&
                           !mask_hides(mask_row[j * p.mask_stride[3]]);
      const unsigned ballot = __ballot_sync(0xffffffffu, visible);
      if (ballot != 0) {
        if (lane == 0) {
          atomicMin(&first_visible, static_cast<unsigned long long>(j0 + __ffs(ballot) - 1));
        }
        break;
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int64_t first = static_cast<int64_t>(first_visible);
    sinks[b] = first == p.len_k ? -1 : first;
  }
}

template <typename M>
void launch_typed(const SinkAttentionParams& p, int64_t* sinks, cudaStream_t stream) {
  resolve_sinks_kernel<M><<<static_cast<unsigned>(p.batch), kResolveThreads, 0, stream>>>(p, sinks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void launch_resolve_sinks(const SinkAttentionParams& p, int64_t* sinks, cudaStream_t stream) {
  switch (p.mask_kind) {
    case MaskKind::Bool: launch_typed<uint8_t>(p, sinks, stream); break;
    case MaskKind::Float32: launch_typed<float>(p, sinks, stream); break;
    case MaskKind::Float16: launch_typed<__half>(p, sinks, stream); break;
    case MaskKind::BFloat16: launch_typed<__nv_bfloat16>(p, sinks, stream); break;
    case MaskKind::None: TORCH_CHECK(false, "zerotuning: launch_resolve_sinks needs a mask");
  }
}

}  // namespace zerotuning::cuda
