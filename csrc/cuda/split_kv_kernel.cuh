// The split-KV sink-attention kernel (see split_kv.h for the work split). Included by one .cu
// file per element type, so the instantiations compile in parallel.
//
// Per key tile, in one block of kSplitKvThreads threads:
//   load    K and V rows of the next tile with cp.async while this tile is processed;
//   scores  each key is owned by kThreadsPerKey neighbouring threads that split its head dim;
//           then softcap, mask, causal / window limits and the sink bias, exactly as the CPU op;
//   softmax one warp per query row: tile max, exp, running max / sum (online softmax);
//   P.V     each thread owns 4 output columns of a few rows and accumulates in fp32.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/macros/Macros.h>

#include <atomic>

#include "device_math.cuh"
#include "split_kv.h"

namespace zerotuning::cuda {

template <typename T, int Bucket>
struct SplitKvConfig {
  static constexpr int kThreads = kSplitKvThreads;
  static constexpr int kRowsMax = kSplitKvRowsMax;
  static constexpr int kKeyTile = split_kv_key_tile(Bucket, sizeof(T));
  static constexpr int kThreadsPerKey = kThreads / kKeyTile;
  static constexpr int kChunkElems = Chunk<T>::kElems;
  static constexpr int kChunksPerRow = Bucket / kChunkElems;
  static constexpr int kChunksPerThread = kChunksPerRow / kThreadsPerKey;  // score phase
  static constexpr int kLoadsPerThread = kKeyTile * kChunksPerRow / kThreads;
  // Shared K/V rows are padded so that the score phase's 16-byte reads (neighbouring threads:
  // neighbouring chunks of one key, or the same chunk of neighbouring keys) hit distinct banks.
  static constexpr int kPadChunks = kThreadsPerKey < 8 ? kThreadsPerKey : 0;
  static constexpr int kSmemRowElems = Bucket + kPadChunks * kChunkElems;
  static constexpr int kTileElems = kKeyTile * kSmemRowElems;
  // P.V phase: a thread owns 4 output columns (a column group) of kAccRows rows.
  static constexpr int kColGroups = Bucket / 4;
  static constexpr int kRowSlots = kThreads / kColGroups;
  static constexpr int kAccRows = kRowsMax / kRowSlots;
  // Two K and two V tiles (double buffering), the scaled query rows and one tile of scores.
  static constexpr int kSmemBytes = 4 * kTileElems * static_cast<int>(sizeof(T)) +
                                    static_cast<int>(sizeof(float)) * kRowsMax * (Bucket + kKeyTile);

  static_assert(kThreads % kKeyTile == 0, "a key is owned by a whole number of threads");
  static_assert((kThreadsPerKey & (kThreadsPerKey - 1)) == 0 && kThreadsPerKey <= 32,
                "threads of one key form an aligned power-of-two lane group");
  static_assert(kChunksPerRow % kThreadsPerKey == 0, "head dim chunks split evenly");
  static_assert(kKeyTile * kChunksPerRow % kThreads == 0, "tile loads split evenly");
  static_assert(kThreads % kColGroups == 0 && kRowsMax % kRowSlots == 0, "P.V ownership");
};

// Loads 4 consecutive elements of a shared V row as floats (8- or 16-byte aligned).
template <typename T>
__device__ __forceinline__ void load4_as_float(const T* src, float* out) {
  if constexpr (sizeof(T) == 4) {
    const float4 x = *reinterpret_cast<const float4*>(src);
    out[0] = x.x;
    out[1] = x.y;
    out[2] = x.z;
    out[3] = x.w;
  } else {
    const uint2 raw = *reinterpret_cast<const uint2*>(src);
    const T* elems = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < 4; ++e) out[e] = to_float(elems[e]);
  }
}

// Adds the additive part of the mask to s; returns false when the mask hides the key.
template <typename M>
__device__ __forceinline__ bool apply_mask_value(const void* mask, int64_t offset, float& s) {
  const M value = static_cast<const M*>(mask)[offset];
  if (mask_hides(value)) return false;
  s += mask_additive(value);
  return true;
}

__device__ __forceinline__ bool apply_mask(const SinkAttentionParams& p, int64_t offset, float& s) {
  switch (p.mask_kind) {
    case MaskKind::Bool: return apply_mask_value<uint8_t>(p.mask, offset, s);
    case MaskKind::Float32: return apply_mask_value<float>(p.mask, offset, s);
    case MaskKind::Float16: return apply_mask_value<__half>(p.mask, offset, s);
    case MaskKind::BFloat16: return apply_mask_value<__nv_bfloat16>(p.mask, offset, s);
    case MaskKind::None: break;
  }
  return true;
}

template <typename T, int Bucket>
__global__ void __launch_bounds__(kSplitKvThreads, 3) split_kv_kernel(const SplitKvArgs args) {
  using Cfg = SplitKvConfig<T, Bucket>;
  constexpr int kRowsMax = Cfg::kRowsMax;
  constexpr int kKeyTile = Cfg::kKeyTile;
  constexpr int kThreadsPerKey = Cfg::kThreadsPerKey;
  constexpr int kChunkElems = Cfg::kChunkElems;
  constexpr int kChunksPerRow = Cfg::kChunksPerRow;
  const SinkAttentionParams& p = args.p;

  extern __shared__ __align__(16) unsigned char smem[];
  T* k_tiles = reinterpret_cast<T*>(smem);  // [2][kTileElems]
  T* v_tiles = k_tiles + 2 * Cfg::kTileElems;  // [2][kTileElems]
  float* q_rows = reinterpret_cast<float*>(v_tiles + 2 * Cfg::kTileElems);  // [kRowsMax][Bucket]
  float* scores = q_rows + kRowsMax * Bucket;  // [kRowsMax][kKeyTile]
  __shared__ float row_max[kRowsMax], row_sum[kRowsMax], row_rescale[kRowsMax];
  __shared__ float row_log_gamma[kRowsMax];
  __shared__ int64_t row_pos[kRowsMax];          // absolute position of the row's query
  __shared__ int64_t row_out[kRowsMax];          // (b * heads_q + h) * len_q + i
  __shared__ int64_t row_mask_offset[kRowsMax];  // mask offset of (b, h, i, key 0)

  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;

  // Block -> (split, batch row and kv head, row chunk). Under a causal mask the last chunks see
  // the most keys, so they get the lowest block indices and start first.
  int64_t block = blockIdx.x;
  const int split = static_cast<int>(block % args.num_splits);
  block /= args.num_splits;
  const int64_t kv_rows = p.batch * p.heads_kv;
  const int64_t kv_row = block % kv_rows;
  const int64_t chunk_order = block / kv_rows;
  const int64_t chunk = p.is_causal ? args.row_chunks - 1 - chunk_order : chunk_order;
  const int64_t b = kv_row / p.heads_kv;
  const int64_t hkv = kv_row % p.heads_kv;
  const int64_t group = p.heads_q / p.heads_kv;
  // Rows are (position, query head of the group) pairs, position-major.
  const int64_t first_flat = chunk * kRowsMax;
  const int rows = static_cast<int>(min(static_cast<int64_t>(kRowsMax), group * p.len_q - first_flat));
  const int64_t pos_offset = p.len_k - p.len_q;  // absolute position of query i is i + offset

  int64_t sink = 0;
  if (args.sinks != nullptr) {
    sink = args.sinks[b];
    if (args.sinks_from_user) {
      CUDA_KERNEL_ASSERT_MSG(sink >= -1 && sink < p.len_k,
                             "zerotuning.sink_attention: sink_index values must be in [-1, len_k)");
    }
  }

  if (tid < kRowsMax) {
    row_max[tid] = kNegInf;
    row_sum[tid] = 0.0f;
    row_rescale[tid] = 1.0f;
    if (tid < rows) {
      const int64_t flat = first_flat + tid;
      const int64_t h = hkv * group + flat % group;
      const int64_t i = flat / group;
      const float log_gamma = p.log_gamma[h];
      CUDA_KERNEL_ASSERT_MSG(isfinite(log_gamma),
                             "zerotuning.sink_attention: log_gamma must be finite (log of a gamma > 0)");
      row_log_gamma[tid] = log_gamma;
      row_pos[tid] = i + pos_offset;
      row_out[tid] = (b * p.heads_q + h) * p.len_q + i;
      row_mask_offset[tid] = b * p.mask_stride[0] + h * p.mask_stride[1] + i * p.mask_stride[2];
    }
  }

  // Query rows, pre-multiplied by the softmax scale, zero-padded to the bucket.
  const T* q = static_cast<const T*>(p.q);
  for (int idx = tid; idx < kRowsMax * Bucket; idx += Cfg::kThreads) {
    const int r = idx / Bucket;
    const int d = idx % Bucket;
    float value = 0.0f;
    if (r < rows && d < p.head_dim) {
      const int64_t flat = first_flat + r;
      const int64_t h = hkv * group + flat % group;
      const int64_t i = flat / group;
      value = to_float(q[b * p.q_stride[0] + h * p.q_stride[1] + i * p.q_stride[2] + d]) * p.scale;
    }
    q_rows[idx] = value;
  }

  // Keys that at least one row of the block may see, then this split's share of their tiles.
  const int64_t first_pos = first_flat / group + pos_offset;
  const int64_t last_pos = (first_flat + rows - 1) / group + pos_offset;
  int64_t key_lo = 0;
  int64_t key_hi = p.len_k;
  if (p.is_causal) key_hi = max(static_cast<int64_t>(0), min(p.len_k, last_pos + 1));
  if (p.sliding_window > 0) {
    key_lo = max(static_cast<int64_t>(0), min(p.len_k, first_pos - p.sliding_window + 1));
  }
  const int64_t tiles = key_hi > key_lo ? (key_hi - key_lo + kKeyTile - 1) / kKeyTile : 0;
  const int64_t tile_begin = split * tiles / args.num_splits;
  const int64_t tile_end = (split + 1) * tiles / args.num_splits;
  const int64_t key_end = min(key_hi, key_lo + tile_end * kKeyTile);

  const T* k_src = static_cast<const T*>(p.k) + b * p.k_stride[0] + hkv * p.k_stride[1];
  const T* v_src = static_cast<const T*>(p.v) + b * p.v_stride[0] + hkv * p.v_stride[1];
  const T zero = from_float<T>(0.0f);

  // K and V rows of the tile starting at key j0 into buffer `buf`; rows past key_end and
  // columns past head_dim become zeros (so padded lanes add nothing, never NaN).
  auto load_tile = [&](int buf, int64_t j0) {
    T* k_dst = k_tiles + buf * Cfg::kTileElems;
    T* v_dst = v_tiles + buf * Cfg::kTileElems;
#pragma unroll
    for (int n = 0; n < Cfg::kLoadsPerThread; ++n) {
      const int idx = tid + n * Cfg::kThreads;
      const int row = idx / kChunksPerRow;
      const int c = idx % kChunksPerRow;
      const int64_t j = j0 + row;
      const int smem_offset = row * Cfg::kSmemRowElems + c * kChunkElems;
      if (args.vector_loads) {
        const bool valid = j < key_end && c * kChunkElems < p.head_dim;
        const int64_t k_offset = valid ? j * p.k_stride[2] + c * kChunkElems : 0;
        const int64_t v_offset = valid ? j * p.v_stride[2] + c * kChunkElems : 0;
        cp_async_16(k_dst + smem_offset, k_src + k_offset, valid);
        cp_async_16(v_dst + smem_offset, v_src + v_offset, valid);
      } else {
#pragma unroll
        for (int e = 0; e < kChunkElems; ++e) {
          const int col = c * kChunkElems + e;
          const bool valid = j < key_end && col < p.head_dim;
          k_dst[smem_offset + e] = valid ? k_src[j * p.k_stride[2] + col] : zero;
          v_dst[smem_offset + e] = valid ? v_src[j * p.v_stride[2] + col] : zero;
        }
      }
    }
  };

  // Score-phase ownership: key `my_key` of the tile, chunks part, part + kThreadsPerKey, ...
  const int my_key = tid / kThreadsPerKey;
  const int part = tid % kThreadsPerKey;
  // P.V-phase ownership: columns 4 * col_group .. + 3 of rows slot, slot + kRowSlots, ...
  const int col_group = tid % Cfg::kColGroups;
  const int slot = tid / Cfg::kColGroups;
  float acc[Cfg::kAccRows][4];
#pragma unroll
  for (int a = 0; a < Cfg::kAccRows; ++a) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[a][e] = 0.0f;
  }

  if (tile_begin < tile_end) {
    load_tile(0, key_lo + tile_begin * kKeyTile);
    cp_async_commit();
  }
  for (int64_t t = tile_begin; t < tile_end; ++t) {
    const int buf = static_cast<int>((t - tile_begin) & 1);
    const int64_t j0 = key_lo + t * kKeyTile;
    if (t + 1 < tile_end) {
      load_tile(buf ^ 1, j0 + kKeyTile);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // tile t (and, the first time, q_rows and row data) visible to all

    // ---- scores ---------------------------------------------------------------------------
    {
      const T* k_row = k_tiles + buf * Cfg::kTileElems + my_key * Cfg::kSmemRowElems;
      // This thread's share of the key, as floats, then one dot product per query row.
      float k_values[Cfg::kChunksPerThread][kChunkElems];
#pragma unroll
      for (int c = 0; c < Cfg::kChunksPerThread; ++c) {
        const int chunk_index = c * kThreadsPerKey + part;
        chunk_to_float<T>(*reinterpret_cast<const uint4*>(k_row + chunk_index * kChunkElems),
                          k_values[c]);
      }
      float dots[kRowsMax];
#pragma unroll
      for (int r = 0; r < kRowsMax; ++r) {
        dots[r] = 0.0f;
        if (r < rows) {
#pragma unroll
          for (int c = 0; c < Cfg::kChunksPerThread; ++c) {
            const float4* q4 = reinterpret_cast<const float4*>(
                q_rows + r * Bucket + (c * kThreadsPerKey + part) * kChunkElems);
#pragma unroll
            for (int e4 = 0; e4 < kChunkElems / 4; ++e4) {
              const float4 x = q4[e4];
              dots[r] = fmaf(x.x, k_values[c][4 * e4 + 0], dots[r]);
              dots[r] = fmaf(x.y, k_values[c][4 * e4 + 1], dots[r]);
              dots[r] = fmaf(x.z, k_values[c][4 * e4 + 2], dots[r]);
              dots[r] = fmaf(x.w, k_values[c][4 * e4 + 3], dots[r]);
            }
          }
        }
      }
      const int64_t j = j0 + my_key;
#pragma unroll
      for (int r = 0; r < kRowsMax; ++r) {
        if (r < rows) {
          const float dot = group_sum<kThreadsPerKey>(dots[r]);
          if (r % kThreadsPerKey == part) {  // the key's threads share its rows' bookkeeping
            float s = kNegInf;
            const int64_t pos = row_pos[r];
            const bool by_position = j < key_end && (!p.is_causal || j <= pos) &&
                                     (p.sliding_window == 0 || j > pos - p.sliding_window);
            if (by_position) {
              s = dot;
              if (p.softcap > 0.0f) s = p.softcap * tanhf(s * (1.0f / p.softcap));
              if (!apply_mask(p, row_mask_offset[r] + j * p.mask_stride[3], s)) {
                s = kNegInf;
              } else if (j == sink && s != kNegInf) {
                s += row_log_gamma[r];  // the ZeroTuning bias
              }
            }
            scores[r * kKeyTile + my_key] = s;
          }
        }
      }
    }
    __syncthreads();

    // ---- online softmax: one warp per row -----------------------------------------------------
    for (int r = warp; r < rows; r += Cfg::kThreads / 32) {
      float* row_scores = scores + r * kKeyTile;
      float tile_max = kNegInf;
      bool bad = false;
      for (int k = lane; k < kKeyTile; k += 32) {
        tile_max = fmaxf(tile_max, row_scores[k]);  // fmaxf drops NaN: `bad` keeps it
        bad |= poisons(row_scores[k]);
      }
      tile_max = warp_max(tile_max);
      const float old_max = row_max[r];
      // A NaN or +inf logit of a visible key poisons the row for good (row max NaN).
      const bool poisoned = __any_sync(0xffffffffu, bad) || isnan(old_max);
      const float new_max = fmaxf(old_max, tile_max);
      float sum = 0.0f;
      float rescale = 1.0f;
      if (poisoned || new_max == kNegInf) {  // poisoned, or nothing visible yet: contribute nothing
        for (int k = lane; k < kKeyTile; k += 32) row_scores[k] = 0.0f;
      } else {
        for (int k = lane; k < kKeyTile; k += 32) {
          const float e = expf(row_scores[k] - new_max);
          row_scores[k] = e;
          sum += e;
        }
        sum = warp_sum(sum);
        rescale = expf(old_max - new_max);  // 0 when old_max is -inf
      }
      __syncwarp();
      if (lane == 0) {
        row_rescale[r] = rescale;
        if (poisoned) {
          row_max[r] = kNaN;
          row_sum[r] = kNaN;
        } else if (new_max != kNegInf) {
          row_sum[r] = row_sum[r] * rescale + sum;
          row_max[r] = new_max;
        }
      }
    }
    __syncthreads();

    // ---- P.V ----------------------------------------------------------------------------------
    {
      const T* v_column = v_tiles + buf * Cfg::kTileElems + col_group * 4;
#pragma unroll
      for (int a = 0; a < Cfg::kAccRows; ++a) {
        const int r = slot + a * Cfg::kRowSlots;
        if (r < rows) {
          const float rescale = row_rescale[r];
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[a][e] *= rescale;
        }
      }
#pragma unroll 4
      for (int k = 0; k < kKeyTile; ++k) {
        float v_values[4];
        load4_as_float<T>(v_column + k * Cfg::kSmemRowElems, v_values);
#pragma unroll
        for (int a = 0; a < Cfg::kAccRows; ++a) {
          const int r = slot + a * Cfg::kRowSlots;
          if (r < rows) {
            const float weight = scores[r * kKeyTile + k];
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[a][e] = fmaf(weight, v_values[e], acc[a][e]);
          }
        }
      }
    }
    __syncthreads();  // before the next iteration overwrites scores and this K/V buffer
  }
  __syncthreads();  // row data visible even when this split had no tile

  // ---- results ----------------------------------------------------------------------------------
  const int64_t total_rows = p.batch * p.heads_q * p.len_q;
  if (args.num_splits == 1) {
    T* out = static_cast<T*>(p.out);
#pragma unroll
    for (int a = 0; a < Cfg::kAccRows; ++a) {
      const int r = slot + a * Cfg::kRowSlots;
      if (r < rows) {
        const float sum = row_sum[r];
        // A query that sees no key: zeros, never NaN; a poisoned row (sum NaN): NaN.
        const float inverse = isnan(sum) ? kNaN : (sum > 0.0f ? 1.0f / sum : 0.0f);
        T* out_row = out + row_out[r] * p.head_dim;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = col_group * 4 + e;
          if (col < p.head_dim) out_row[col] = from_float<T>(acc[a][e] * inverse);
        }
      }
    }
    if (tid < rows) {
      const float sum = row_sum[tid];
      p.lse[row_out[tid]] = isnan(sum) ? kNaN : (sum > 0.0f ? row_max[tid] + logf(sum) : kNegInf);
    }
  } else {
#pragma unroll
    for (int a = 0; a < Cfg::kAccRows; ++a) {
      const int r = slot + a * Cfg::kRowSlots;
      if (r < rows) {
        float* dst = args.partial_out + (split * total_rows + row_out[r]) * Bucket + col_group * 4;
        *reinterpret_cast<float4*>(dst) = make_float4(acc[a][0], acc[a][1], acc[a][2], acc[a][3]);
      }
    }
    if (tid < rows) {
      args.partial_max[split * total_rows + row_out[tid]] = row_max[tid];
      args.partial_sum[split * total_rows + row_out[tid]] = row_sum[tid];
    }
  }
}

template <typename T, int Bucket>
void launch_split_kv_bucket(const SplitKvArgs& args, cudaStream_t stream) {
  using Cfg = SplitKvConfig<T, Bucket>;
  auto kernel = split_kv_kernel<T, Bucket>;
  // Above 48 KiB of dynamic shared memory a kernel must opt in (per device; cheap to repeat).
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      Cfg::kSmemBytes));
  const int64_t blocks = args.p.batch * args.p.heads_kv * args.row_chunks * args.num_splits;
  kernel<<<static_cast<unsigned>(blocks), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, int Bucket>
int blocks_per_sm_bucket() {
  using Cfg = SplitKvConfig<T, Bucket>;
  auto kernel = split_kv_kernel<T, Bucket>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      Cfg::kSmemBytes));
  int blocks = 0;
  C10_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, Cfg::kThreads, Cfg::kSmemBytes));
  return blocks;
}

template <typename T>
void launch_split_kv_typed(const SplitKvArgs& args, cudaStream_t stream) {
  switch (split_kv_head_dim_bucket(args.p.head_dim)) {
    case 64: launch_split_kv_bucket<T, 64>(args, stream); break;
    case 128: launch_split_kv_bucket<T, 128>(args, stream); break;
    default: launch_split_kv_bucket<T, 256>(args, stream); break;
  }
}

template <typename T>
int split_kv_blocks_per_sm_typed(int bucket) {
  switch (bucket) {
    case 64: return blocks_per_sm_bucket<T, 64>();
    case 128: return blocks_per_sm_bucket<T, 128>();
    default: return blocks_per_sm_bucket<T, 256>();
  }
}

extern template void launch_split_kv_typed<float>(const SplitKvArgs&, cudaStream_t);
extern template void launch_split_kv_typed<__half>(const SplitKvArgs&, cudaStream_t);
extern template void launch_split_kv_typed<__nv_bfloat16>(const SplitKvArgs&, cudaStream_t);
extern template int split_kv_blocks_per_sm_typed<float>(int);
extern template int split_kv_blocks_per_sm_typed<__half>(int);
extern template int split_kv_blocks_per_sm_typed<__nv_bfloat16>(int);

}  // namespace zerotuning::cuda
