// Sink attention over vLLM's paged CPU KV cache. One work item = (request, KV head, block of the
// request's queries); its rows are those queries for every query head of the KV head's group,
// so each cache block is read once per group. Per tile of whole cache blocks: S = Q K, softcap,
// the sink bias on key 0, the causal limit, online softmax, O += P V (the steps of the dense CPU
// kernel), with register-blocked products whose results do not depend on the batch (below).
#include "sink_attention_paged_kernel.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>
#include <vector>

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

// ---- the two products, batch-invariant ---------------------------------------------------
// Every element is one fused multiply-add chain in a fixed order (over head_dim for a score,
// over keys for an output), whatever the number of rows or keys of the call, so a query's output
// depends only on its own query, its request's cache and its position: not on how vLLM batched
// or chunked it (BLAS picks its blocking, hence its summation order, by matrix size).

// Rows and vectors of columns held in registers (AVX-512 has 32 vector registers, AVX2 16).
constexpr int kScoreRows = Vec::size() >= 16 ? 8 : 4;
constexpr int kScoreVecs = 2;
constexpr int kOutRows = Vec::size() >= 16 ? 4 : 2;
constexpr int kOutVecs = 4;

// Loads and stores of vector v of C: the last one only `last` elements wide when Partial.
template <int C, bool Partial>
inline Vec load_part(const float* x, int v, int64_t last) {
  if constexpr (Partial) {
    if (v == C - 1) return Vec::loadu(x, last);
  }
  return Vec::loadu(x);
}

template <int C, bool Partial>
inline void store_part(const Vec& value, float* x, int v, int64_t last) {
  if constexpr (Partial) {
    if (v == C - 1) return value.store(x, last);
  }
  value.store(x);
}

// c[r, j0 + ...] (+)= sum_i a[r, i] b[i, j0 + ...] for R rows and C vectors of columns (the last
// one `last` wide when Partial): one fused multiply-add chain per element, over i in order,
// starting from 0 (scores) or from c (Accumulate: outputs).
template <int R, int C, bool Partial, bool Accumulate>
inline void fma_tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k, float* c, int64_t ldc,
                     int64_t last) {
  Vec sums[R][C];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < C; ++v)
      sums[r][v] = Accumulate ? load_part<C, Partial>(c + r * ldc + v * Vec::size(), v, last) : Vec(0.0f);
  for (int64_t i = 0; i < k; ++i) {
    Vec row[C];
    for (int v = 0; v < C; ++v) row[v] = load_part<C, Partial>(b + i * ldb + v * Vec::size(), v, last);
    for (int r = 0; r < R; ++r) {
      const Vec weight(a[r * lda + i]);  // no skip at 0: 0 * inf must give NaN, as in the definition
      for (int v = 0; v < C; ++v) sums[r][v] = at::vec::fmadd(weight, row[v], sums[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < C; ++v) store_part<C, Partial>(sums[r][v], c + r * ldc + v * Vec::size(), v, last);
}

template <int R, int Vecs, bool Accumulate>
void fma_rows(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k, float* c, int64_t ldc, int64_t n) {
  constexpr int64_t V = Vec::size();
  int64_t j = 0;
  for (; j + Vecs * V <= n; j += Vecs * V) fma_tile<R, Vecs, false, Accumulate>(a, lda, b + j, ldb, k, c + j, ldc, V);
  for (; j + V <= n; j += V) fma_tile<R, 1, false, Accumulate>(a, lda, b + j, ldb, k, c + j, ldc, V);
  if (j < n) fma_tile<R, 1, true, Accumulate>(a, lda, b + j, ldb, k, c + j, ldc, n - j);
}

template <int R, int Vecs, bool Accumulate>
void fma_remainder(int64_t m, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k, float* c,
                   int64_t ldc, int64_t n) {
  if (m == R) {
    fma_rows<R, Vecs, Accumulate>(a, lda, b, ldb, k, c, ldc, n);
  } else if constexpr (R > 1) {
    fma_remainder<R - 1, Vecs, Accumulate>(m, a, lda, b, ldb, k, c, ldc, n);
  }
}

// C[m x n] (+)= A[m x k] B[k x n], row-major, Rows rows and Vecs vectors of columns at a time.
template <int Rows, int Vecs, bool Accumulate>
void fma_a_b(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
             int64_t ldc) {
  int64_t r = 0;
  for (; r + Rows <= m; r += Rows) fma_rows<Rows, Vecs, Accumulate>(a + r * lda, lda, b, ldb, k, c + r * ldc, ldc, n);
  if (r < m) fma_remainder<Rows - 1, Vecs, Accumulate>(m - r, a + r * lda, lda, b, ldb, k, c + r * ldc, ldc, n);
}

// S[m x n] = A[m x k] B[k x n]; B is a block's transposed keys [head_dim, block].
// Columns past n up to a whole vector (at most ldb) may be written too: the caller ignores them.
void scores_a_b(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                int64_t ldc) {
  n = std::min(ldb, (n + Vec::size() - 1) / Vec::size() * Vec::size());  // whole vectors within the block
  fma_a_b<kScoreRows, kScoreVecs, false>(m, n, k, a, lda, b, ldb, c, ldc);
}

// C[m x n] += P[m x k] V[k x n]; V is a block's values [block, head_dim].
void output_a_b(int64_t m, int64_t n, int64_t k, const float* p, int64_t ldp, const float* v, int64_t ldv, float* c,
                int64_t ldc) {
  fma_a_b<kOutRows, kOutVecs, true>(m, n, k, p, ldp, v, ldv, c, ldc);
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
      scores_a_b(rows, nk, head_dim, ws.q.data(), head_dim, keys, block_size, scores + off, tile);
    }

    for (int64_t r = 0; r < rows; ++r) {
      const int64_t h = it.hkv * shape.group + r / nq;
      float* s = scores + r * tile;
      // The causal limit: the query at position pos sees keys [0, pos]. The softmax runs over
      // the row's own visible keys only (so its summation order does not depend on the other
      // rows of the item); the hidden ones get weight 0.
      const int64_t visible = std::clamp<int64_t>(it.offset + it.i0 + r % nq + 1 - j0, 0, nk_tile);
      std::fill(s + visible, s + nk_tile, 0.0f);
      if (visible == 0) continue;
      if (p.softcap > 0.0f) score_rows::softcap_row(s, visible, p.softcap);
      // Key 0, the sink, is visible to every query (position >= 0): log(gamma_h) on it.
      if (j0 == 0) s[0] += p.log_gamma[h];
      score_rows::online_softmax_step(s, visible, ws.running_max[r], ws.running_sum[r],
                                      ws.acc.data() + r * head_dim, head_dim);
    }

    for (int64_t off = 0; off < nk_tile; off += block_size) {
      const int64_t nk = std::min(block_size, nk_tile - off);
      const float* values = block_of(j0 + off, /*values=*/true, ws.v.data());
      output_a_b(rows, head_dim, nk, scores + off, tile, values, head_dim, ws.acc.data(), head_dim);
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
