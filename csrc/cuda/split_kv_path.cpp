// Host side of the split-KV path: resolves the sinks, plans how many key slices each row gets,
// allocates their workspace and launches the kernels.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>

#include <algorithm>
#include <array>
#include <atomic>

#include "resolve_sinks.h"
#include "run_paths.h"
#include "split_kv.h"

namespace zerotuning::cuda {
namespace {

// Each slice of keys gets at least this many tiles, so splitting never costs more in
// bookkeeping than it gains in parallelism.
constexpr int64_t kMinTilesPerSplit = 4;

// Resident split-KV blocks on the whole device, for this element type and head-dim bucket.
// Asked of the CUDA runtime once per (device, type, bucket).
int64_t resident_blocks(ElementType type, int bucket) {
  constexpr int kCachedDevices = 64;
  static std::array<std::atomic<int64_t>, kCachedDevices * 9> cache{};
  const int device = c10::cuda::current_device();
  const int slot = device * 9 + static_cast<int>(type) * 3 + (bucket == 64 ? 0 : bucket == 128 ? 1 : 2);
  if (device < kCachedDevices) {
    const int64_t cached = cache[slot].load(std::memory_order_relaxed);
    if (cached > 0) return cached;
  }
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t blocks = static_cast<int64_t>(sms) * std::max(1, split_kv_blocks_per_sm(type, bucket));
  if (device < kCachedDevices) cache[slot].store(blocks, std::memory_order_relaxed);
  return blocks;
}

// Enough key slices that the blocks fill the device in one wave, never more than the keys allow.
int plan_splits(const SinkAttentionParams& p, int64_t base_blocks, int bucket) {
  const int64_t slots = resident_blocks(p.element_type, bucket);
  if (base_blocks >= slots) return 1;
  const int64_t key_tile = split_kv_key_tile(bucket, element_size(p.element_type));
  const int64_t tiles = (p.len_k + key_tile - 1) / key_tile;
  const int64_t splits = std::min({slots / base_blocks, tiles / kMinTilesPerSplit,
                                   static_cast<int64_t>(kSplitKvMaxSplits)});
  return static_cast<int>(std::max<int64_t>(1, splits));
}

// K and V rows 16-byte aligned, so tiles can be copied 16 bytes at a time.
bool kv_rows_aligned_16(const SinkAttentionParams& p) {
  const int64_t element_bytes = element_size(p.element_type);
  const int64_t chunk_elems = 16 / element_bytes;
  auto aligned = [&](const void* data, const int64_t* strides) {
    if (reinterpret_cast<std::uintptr_t>(data) % 16 != 0) return false;
    return strides[0] % chunk_elems == 0 && strides[1] % chunk_elems == 0 && strides[2] % chunk_elems == 0;
  };
  return p.head_dim % chunk_elems == 0 && aligned(p.k, p.k_stride) && aligned(p.v, p.v_stride);
}

}  // namespace

void run_split_kv(const SinkAttentionCall& call, cudaStream_t stream) {
  const SinkAttentionParams& p = call.params;
  SplitKvArgs args;
  args.p = p;

  at::Tensor resolved_sinks;
  if (p.sink_index != nullptr) {
    args.sinks = p.sink_index;
    args.sinks_from_user = true;
  } else if (p.mask_kind != MaskKind::None) {
    resolved_sinks = at::empty({p.batch}, call.q.options().dtype(at::kLong));
    launch_resolve_sinks(p, resolved_sinks.data_ptr<int64_t>(), stream);
    args.sinks = resolved_sinks.data_ptr<int64_t>();
  }
  args.vector_loads = kv_rows_aligned_16(p);

  const int64_t group = p.heads_q / p.heads_kv;
  args.row_chunks = (group * p.len_q + kSplitKvRowsMax - 1) / kSplitKvRowsMax;
  const int bucket = split_kv_head_dim_bucket(p.head_dim);
  const int64_t base_blocks = p.batch * p.heads_kv * args.row_chunks;
  args.num_splits = plan_splits(p, base_blocks, bucket);
  TORCH_CHECK(base_blocks * args.num_splits < (int64_t{1} << 31), "zerotuning.sink_attention: ",
              base_blocks * args.num_splits, " CUDA blocks exceed the grid limit; split the batch");

  at::Tensor partial_out, partial_stats;
  if (args.num_splits > 1) {
    const int64_t rows = p.batch * p.heads_q * p.len_q;
    const auto options = call.q.options().dtype(at::kFloat);
    partial_out = at::empty({args.num_splits, rows, bucket}, options);
    partial_stats = at::empty({2, args.num_splits, rows}, options);
    args.partial_out = partial_out.data_ptr<float>();
    args.partial_max = partial_stats[0].data_ptr<float>();
    args.partial_sum = partial_stats[1].data_ptr<float>();
  }
  launch_split_kv(args, stream);
  if (args.num_splits > 1) launch_split_kv_combine(args, stream);
}

}  // namespace zerotuning::cuda
