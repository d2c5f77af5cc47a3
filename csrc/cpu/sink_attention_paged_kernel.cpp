// Sink attention over vLLM's paged CPU KV cache. One work item = (request, KV head, block of the
// request's queries); its rows are those queries for every query head of the KV head's group,
// so each cache block is read once per group. Per tile of whole cache blocks: S = Q K by BLAS
// (or a register-blocked loop for the few rows of a decode step), softcap, the sink bias on key
// 0, the causal limit, online softmax, O += P V; the same steps as the dense CPU kernel.
#include "sink_attention_paged_kernel.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>
#include <vector>

#include "blas.h"
#include "score_rows.h"

namespace zerotuning::cpu {
namespace {

using score_rows::kNaN;
using score_rows::kNegInf;
using score_rows::load_as_float;
using score_rows::store_from_float;
using score_rows::Vec;

// Rows (query head x query) per work item and keys per tile, as in the dense kernel.
constexpr int64_t kTargetRows = 64;
constexpr int64_t kTileKeys = 512;
// Items of at most this many rows (a decode step: one query per head of the group) skip BLAS.
constexpr int64_t kSmallRows = 8;

struct Shape {
  int64_t group = 1;     // query heads per KV head
  int64_t block_q = 1;   // queries per work item
  int64_t max_rows = 1;  // group * block_q
  int64_t tile = 1;      // keys per tile: whole cache blocks
};

struct Item {
  int64_t request = 0, hkv = 0;
  int64_t first_token = 0;  // packed index of the request's query i0
  int64_t i0 = 0, nq = 0, rows = 0;
  int64_t offset = 0;  // position of the request's query i is offset + i
  int64_t key_hi = 0;  // keys [0, key_hi) are visible to some row
};

struct Workspace {
  std::vector<float> q, scores, acc, k, v, running_max, running_sum;
  Workspace(const Shape& shape, int64_t head_dim, int64_t block_size, bool convert)
      : q(shape.max_rows * head_dim),
        scores(shape.max_rows * shape.tile),
        acc(shape.max_rows * head_dim),
        k(convert ? head_dim * block_size : 0),
        v(convert ? block_size * head_dim : 0),
        running_max(shape.max_rows),
        running_sum(shape.max_rows) {}
};

// S[m x n] = A[m x k] B[k x n] for m <= kSmallRows rows, row-major (B is a block's transposed
// keys): each vector of n columns is accumulated in registers for every row at once.
void small_a_b(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
               float* c, int64_t ldc) {
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) {
    Vec sums[kSmallRows];
    for (int64_t r = 0; r < m; ++r) sums[r] = Vec(0.0f);
    for (int64_t d = 0; d < k; ++d) {
      const Vec column = Vec::loadu(b + d * ldb + j);
      for (int64_t r = 0; r < m; ++r) sums[r] = at::vec::fmadd(Vec(a[r * lda + d]), column, sums[r]);
    }
    for (int64_t r = 0; r < m; ++r) sums[r].store(c + r * ldc + j);
  }
  for (; j < n; ++j) {
    for (int64_t r = 0; r < m; ++r) {
      float sum = 0.0f;
      for (int64_t d = 0; d < k; ++d) sum += a[r * lda + d] * b[d * ldb + j];
      c[r * ldc + j] = sum;
    }
  }
}

// The items of a call, costliest first (rows x visible keys), so uneven items balance.
std::vector<Item> make_items(const PagedAttentionParams& p, const Shape& shape) {
  std::vector<Item> items;
  for (int64_t r = 0; r < p.num_requests; ++r) {
    const int64_t first = p.query_start_loc[r], len_q = p.query_start_loc[r + 1] - first;
    const int64_t offset = p.seq_lens[r] - len_q;
    for (int64_t i0 = 0; i0 < len_q; i0 += shape.block_q) {
      const int64_t nq = std::min(shape.block_q, len_q - i0);
      for (int64_t hkv = 0; hkv < p.heads_kv; ++hkv) {
        items.push_back({r, hkv, first, i0, nq, shape.group * nq, offset, offset + i0 + nq});
      }
    }
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.rows * a.key_hi > b.rows * b.key_hi;
  });
  return items;
}

template <typename T>
void run_item(const PagedAttentionParams& p, const Shape& shape, const Item& it, Workspace& ws) {
  const int64_t head_dim = p.head_dim, block_size = p.block_size, tile = shape.tile;
  const int64_t rows = it.rows, nq = it.nq;
  const T* query = static_cast<const T*>(p.query);
  const T* cache = static_cast<const T*>(p.kv_cache);
  const int32_t* blocks = p.block_table + it.request * p.block_table_stride;

  for (int64_t r = 0; r < rows; ++r) {
    const int64_t h = it.hkv * shape.group + r / nq;
    const int64_t token = it.first_token + it.i0 + r % nq;
    load_as_float(query + token * p.query_stride[0] + h * p.query_stride[1], ws.q.data() + r * head_dim,
                  head_dim, p.scale);
  }
  std::fill_n(ws.running_max.data(), rows, kNegInf);
  std::fill_n(ws.running_sum.data(), rows, 0.0f);
  std::fill_n(ws.acc.data(), rows * head_dim, 0.0f);
  const bool small = rows <= kSmallRows;

  // The keys [D, block] or values [block, D] of the block holding key j, as float32.
  auto block_of = [&](int64_t j, bool values, float* converted) -> const float* {
    const T* slab = cache + blocks[j / block_size] * p.cache_stride[0] + it.hkv * p.cache_stride[1] +
                    (values ? block_size * head_dim : 0);
    if constexpr (std::is_same_v<T, float>) {
      return slab;
    } else {
      load_as_float(slab, converted, block_size * head_dim, 1.0f);
      return converted;
    }
  };

  for (int64_t j0 = 0; j0 < it.key_hi; j0 += tile) {
    const int64_t nk_tile = std::min(tile, it.key_hi - j0);
    float* scores = ws.scores.data();
    for (int64_t off = 0; off < nk_tile; off += block_size) {
      const int64_t nk = std::min(block_size, nk_tile - off);
      const float* keys = block_of(j0 + off, /*values=*/false, ws.k.data());
      if (small) {
        small_a_b(rows, nk, head_dim, ws.q.data(), head_dim, keys, block_size, scores + off, tile);
      } else {
        gemm_a_b(static_cast<int>(rows), static_cast<int>(nk), static_cast<int>(head_dim), 1.0f, ws.q.data(),
                 static_cast<int>(head_dim), keys, static_cast<int>(block_size), 0.0f, scores + off,
                 static_cast<int>(tile));
      }
    }

    for (int64_t r = 0; r < rows; ++r) {
      const int64_t h = it.hkv * shape.group + r / nq;
      float* s = scores + r * tile;
      if (p.softcap > 0.0f) score_rows::softcap_row(s, nk_tile, p.softcap);
      // Key 0, the sink, is visible to every query (position >= 0): log(gamma_h) on it.
      if (j0 == 0) s[0] += p.log_gamma[h];
      // The causal limit: the query at position pos sees keys [0, pos].
      const int64_t visible = it.offset + it.i0 + r % nq + 1 - j0;
      for (int64_t j = std::max<int64_t>(visible, 0); j < nk_tile; ++j) s[j] = kNegInf;
      score_rows::online_softmax_step(s, nk_tile, ws.running_max[r], ws.running_sum[r],
                                      ws.acc.data() + r * head_dim, head_dim);
    }

    for (int64_t off = 0; off < nk_tile; off += block_size) {
      const int64_t nk = std::min(block_size, nk_tile - off);
      const float* values = block_of(j0 + off, /*values=*/true, ws.v.data());
      if (small) {
        score_rows::small_a_b_accumulate(rows, head_dim, nk, scores + off, tile, values, head_dim, ws.acc.data(),
                                         head_dim);
      } else {
        gemm_a_b(static_cast<int>(rows), static_cast<int>(head_dim), static_cast<int>(nk), 1.0f, scores + off,
                 static_cast<int>(tile), values, static_cast<int>(head_dim), 1.0f, ws.acc.data(),
                 static_cast<int>(head_dim));
      }
    }
  }

  // Normalise and store; a poisoned row (running sum NaN) gets NaN, a row that saw only -inf
  // logits (gamma 0 on a first query) gets zeros.
  T* output = static_cast<T*>(p.output);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t h = it.hkv * shape.group + r / nq;
    const int64_t token = it.first_token + it.i0 + r % nq;
    T* out = output + token * p.output_stride[0] + h * p.output_stride[1];
    const float sum = ws.running_sum[r];
    if (std::isnan(sum)) {
      std::fill_n(out, head_dim, static_cast<T>(kNaN));
      continue;
    }
    store_from_float(ws.acc.data() + r * head_dim, out, head_dim, sum > 0.0f ? 1.0f / sum : 0.0f);
  }
}

template <typename T>
void forward_typed(const PagedAttentionParams& p) {
  Shape shape;
  shape.group = p.heads_q / p.heads_kv;
  shape.block_q = std::max<int64_t>(1, kTargetRows / shape.group);
  shape.max_rows = shape.group * shape.block_q;
  shape.tile = std::max<int64_t>(1, kTileKeys / p.block_size) * p.block_size;
  const std::vector<Item> items = make_items(p, shape);
  const int64_t count = static_cast<int64_t>(items.size());
  if (count == 0) return;
  const bool convert = !std::is_same_v<T, float>;
  std::atomic<int64_t> next{0};
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), count);
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    const SequentialBlas sequential_blas;
    Workspace ws(shape, p.head_dim, p.block_size, convert);
    for (int64_t t = begin; t < end; ++t) {
      for (int64_t unit = next++; unit < count; unit = next++) run_item<T>(p, shape, items[unit], ws);
    }
  });
}

}  // namespace

void sink_attention_paged_forward(const PagedAttentionParams& p) {
  switch (p.element_type) {
    case ElementType::Float32: forward_typed<float>(p); break;
    case ElementType::Float16: forward_typed<c10::Half>(p); break;
    case ElementType::BFloat16: forward_typed<c10::BFloat16>(p); break;
  }
}

}  // namespace zerotuning::cpu
