// The split-KV (flash-decoding) CUDA kernel: its launch arguments, shared by the host planner
// (split_kv_path.cpp) and the kernel instantiations (split_kv_*.cu).
//
// One block = one batch row x one kv head x up to kSplitKvRowsMax query rows (query heads of
// the group x positions) x one slice of the keys. Keys stream through shared memory in tiles;
// scores, softmax and P.V run on CUDA cores in fp32. With several slices per row ("splits"), a
// second kernel combines the partial results, so a decode step (one query, long cache) still
// fills the GPU.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../sink_attention_params.h"

namespace zerotuning::cuda {

constexpr int kSplitKvThreads = 128;
constexpr int kSplitKvRowsMax = 16;
constexpr int kSplitKvTileBytes = 8192;  // bytes of K (and of V) per key tile, before padding
constexpr int kSplitKvMaxSplits = 128;   // key slices per row at most (the combine kernel's limit)

// Head dims are padded up to one of these compile-time buckets.
inline int split_kv_head_dim_bucket(int64_t head_dim) {
  return head_dim <= 64 ? 64 : head_dim <= 128 ? 128 : 256;
}

inline int element_size(ElementType type) { return type == ElementType::Float32 ? 4 : 2; }

// Keys per tile for a padded head dim (whole tile = kSplitKvTileBytes).
constexpr int split_kv_key_tile(int bucket, int elem_size) {
  return kSplitKvTileBytes / (bucket * elem_size);
}

struct SplitKvArgs {
  SinkAttentionParams p;
  const int64_t* sinks = nullptr;  // [batch] on the device; nullptr: key 0 in every row
  bool sinks_from_user = false;    // sink_index came from the caller: range-checked on device
  bool vector_loads = false;       // q/k/v rows 16-byte aligned: load 16 bytes at a time
  int64_t row_chunks = 1;          // ceil(group * len_q / kSplitKvRowsMax)
  int num_splits = 1;
  // Only with num_splits > 1: unnormalised partial outputs and their softmax statistics.
  float* partial_out = nullptr;  // [num_splits, batch * heads_q * len_q, bucket]
  float* partial_max = nullptr;  // [num_splits, batch * heads_q * len_q]
  float* partial_sum = nullptr;  // [num_splits, batch * heads_q * len_q]
};

// Dynamic shared memory and resident blocks per SM of the kernel for this element type and
// head-dim bucket (on the current device).
int split_kv_blocks_per_sm(ElementType type, int bucket);

void launch_split_kv(const SplitKvArgs& args, cudaStream_t stream);

// out, lse from the num_splits partial results (launched only when num_splits > 1).
void launch_split_kv_combine(const SplitKvArgs& args, cudaStream_t stream);

}  // namespace zerotuning::cuda
