// CPU sink attention. One work item = (batch row, kv head, block of query positions); its rows
// are the block's positions for every query head that shares the kv head, so K and V are read
// once per group (grouped-query attention without repeating K/V). Per key block: S = Q K^T by
// BLAS, softcap, mask, causal/window limits and the sink bias on S, online softmax, O += P V.
#include "sink_attention_cpu_kernel.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
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

// Rows (query head x position) per work item and keys per block: big enough for BLAS to run
// near peak, small enough that a block of scores stays in L2.
constexpr int64_t kTargetRows = 64;
constexpr int64_t kKeyBlock = 512;
// Key blocks of items with at most kSmallRows rows (decoding: one query per head of a kv-head
// group) and at most kSmallKeys keys skip BLAS: there its per-call cost exceeds the arithmetic
// (a decoding step over a short context). Longer blocks amortise it: BLAS is faster there
// (scripts/bench_attention.py, decode-4096).
constexpr int64_t kSmallRows = 8;
constexpr int64_t kSmallKeys = 128;

// S[m x n] = A[m x k] B[n x k]^T for a few rows (kSmallRows), row-major: vectorised dot products.
void small_a_bt(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                float* c, int64_t ldc) {
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t r = 0; r < m; ++r) {
      c[r * ldc + j] = at::vec::map2_reduce_all<float>(
          [](Vec x, Vec y) { return x * y; }, [](Vec x, Vec y) { return x + y; }, a + r * lda, b + j * ldb, k);
    }
  }
}

// ---- work split ---------------------------------------------------------------------------

struct Plan {
  int64_t group = 1;       // query heads per kv head
  int64_t block_q = 1;     // query positions per work item
  int64_t q_blocks = 1;
  int64_t max_rows = 1;    // group * block_q
  int64_t key_block = kKeyBlock;
  int64_t items = 0;       // batch x kv head x query block
  int64_t splits = 1;      // key-range pieces per item (flash-decoding), combined afterwards
};

Plan make_plan(const SinkAttentionParams& p, int64_t threads) {
  Plan plan;
  plan.group = p.heads_q / p.heads_kv;
  plan.block_q = std::max<int64_t>(1, std::min<int64_t>(p.len_q, kTargetRows / plan.group));
  plan.q_blocks = (p.len_q + plan.block_q - 1) / plan.block_q;
  plan.max_rows = plan.group * plan.block_q;
  plan.key_block = std::min<int64_t>(kKeyBlock, std::max<int64_t>(p.len_k, 1));
  plan.items = p.batch * p.heads_kv * plan.q_blocks;
  // Fewer items than threads (decoding a small batch): split the keys so every core works.
  if (plan.items < threads) {
    const int64_t key_blocks = (p.len_k + plan.key_block - 1) / plan.key_block;
    plan.splits = std::max<int64_t>(1, std::min((threads + plan.items - 1) / plan.items, key_blocks));
  }
  return plan;
}

// Which rows and keys one work item covers.
struct Item {
  int64_t b = 0, hkv = 0, i0 = 0, nq = 0, rows = 0;
  int64_t key_lo = 0, key_hi = 0;  // keys that at least one row of the item may see
};

Item describe_item(const SinkAttentionParams& p, const Plan& plan, int64_t item) {
  // Under a causal mask late query blocks cost more: number them first so they start first.
  const int64_t heads_rows = p.batch * p.heads_kv;
  const int64_t q_block =
      p.is_causal ? plan.q_blocks - 1 - item / heads_rows : item / heads_rows;
  Item it;
  it.b = (item % heads_rows) / p.heads_kv;
  it.hkv = item % p.heads_kv;
  it.i0 = q_block * plan.block_q;
  it.nq = std::min(plan.block_q, p.len_q - it.i0);
  it.rows = plan.group * it.nq;
  const int64_t offset = p.len_k - p.len_q;  // absolute position of query i is i + offset
  it.key_hi = p.is_causal ? std::clamp<int64_t>(it.i0 + it.nq + offset, 0, p.len_k) : p.len_k;
  it.key_lo = p.sliding_window > 0
                  ? std::clamp<int64_t>(it.i0 + offset - p.sliding_window + 1, 0, p.len_k)
                  : 0;
  return it;
}

// The part of an item's keys that split `s` covers, in whole key blocks.
std::pair<int64_t, int64_t> split_keys(const Plan& plan, const Item& it, int64_t s) {
  const int64_t blocks = (it.key_hi - it.key_lo + plan.key_block - 1) / plan.key_block;
  const int64_t per_split = (blocks + plan.splits - 1) / plan.splits * plan.key_block;
  const int64_t begin = std::min(it.key_hi, it.key_lo + s * per_split);
  return {begin, std::min(it.key_hi, begin + per_split)};
}

struct Workspace {
  std::vector<float> q, scores, acc, k, v, running_max, running_sum;
  explicit Workspace(const Plan& plan, int64_t head_dim, bool convert_kv)
      : q(plan.max_rows * head_dim),
        scores(plan.max_rows * plan.key_block),
        acc(plan.max_rows * head_dim),
        k(convert_kv ? plan.key_block * head_dim : 0),
        v(convert_kv ? plan.key_block * head_dim : 0),
        running_max(plan.max_rows),
        running_sum(plan.max_rows) {}
};

// Unnormalised partial results of splits, combined once all are done.
struct Partials {
  std::vector<float> acc, running_max, running_sum;
  Partials(const Plan& plan, int64_t head_dim) {
    if (plan.splits == 1) return;
    const int64_t slots = plan.items * plan.splits * plan.max_rows;
    acc.resize(slots * head_dim);
    running_max.resize(slots);
    running_sum.resize(slots);
  }
};

// ---- one work item ------------------------------------------------------------------------

// Online softmax of the item's rows over keys [key_begin, key_end): leaves the unnormalised
// output, running max and running sum in ws.
template <typename T>
void accumulate(const SinkAttentionParams& p, const Plan& plan, const Item& it, int64_t sink,
                int64_t key_begin, int64_t key_end, Workspace& ws) {
  const int64_t head_dim = p.head_dim;
  const int64_t nq = it.nq, rows = it.rows;
  const int64_t key_block = plan.key_block;

  const T* q = static_cast<const T*>(p.q);
  const T* k_base = static_cast<const T*>(p.k) + it.b * p.k_stride[0] + it.hkv * p.k_stride[1];
  const T* v_base = static_cast<const T*>(p.v) + it.b * p.v_stride[0] + it.hkv * p.v_stride[1];

  for (int64_t r = 0; r < rows; ++r) {
    const int64_t h = it.hkv * plan.group + r / nq;
    const int64_t i = it.i0 + r % nq;
    load_as_float(q + it.b * p.q_stride[0] + h * p.q_stride[1] + i * p.q_stride[2],
                  ws.q.data() + r * head_dim, head_dim, p.scale);
  }
  std::fill_n(ws.running_max.data(), rows, kNegInf);
  std::fill_n(ws.running_sum.data(), rows, 0.0f);
  std::fill_n(ws.acc.data(), rows * head_dim, 0.0f);

  for (int64_t j0 = key_begin; j0 < key_end; j0 += key_block) {
    const int64_t nk = std::min(key_block, key_end - j0);
    const float* k_block;
    const float* v_block;
    int k_ld, v_ld;
    if constexpr (std::is_same_v<T, float>) {
      k_block = k_base + j0 * p.k_stride[2];
      v_block = v_base + j0 * p.v_stride[2];
      k_ld = static_cast<int>(p.k_stride[2]);
      v_ld = static_cast<int>(p.v_stride[2]);
    } else {
      for (int64_t j = 0; j < nk; ++j) {
        load_as_float(k_base + (j0 + j) * p.k_stride[2], ws.k.data() + j * head_dim, head_dim, 1.0f);
        load_as_float(v_base + (j0 + j) * p.v_stride[2], ws.v.data() + j * head_dim, head_dim, 1.0f);
      }
      k_block = ws.k.data();
      v_block = ws.v.data();
      k_ld = v_ld = static_cast<int>(head_dim);
    }

    float* scores = ws.scores.data();
    const bool small = rows <= kSmallRows && nk <= kSmallKeys;
    if (small) {
      small_a_bt(rows, nk, head_dim, ws.q.data(), head_dim, k_block, k_ld, scores, key_block);
    } else {
      gemm_a_bt(static_cast<int>(rows), static_cast<int>(nk), static_cast<int>(head_dim), 1.0f,
                ws.q.data(), static_cast<int>(head_dim), k_block, k_ld, 0.0f, scores,
                static_cast<int>(key_block));
    }

    for (int64_t r = 0; r < rows; ++r) {
      const int64_t h = it.hkv * plan.group + r / nq;
      const int64_t i = it.i0 + r % nq;
      float* s = scores + r * key_block;
      if (p.softcap > 0.0f) score_rows::softcap_row(s, nk, p.softcap);
      score_rows::mask_limit_and_bias_row(p, s, nk, j0, it.b, h, i, sink);
      score_rows::online_softmax_step(s, nk, ws.running_max[r], ws.running_sum[r],
                                      ws.acc.data() + r * head_dim, head_dim);
    }

    if (small) {
      score_rows::small_a_b_accumulate(rows, head_dim, nk, scores, key_block, v_block, v_ld, ws.acc.data(), head_dim);
    } else {
      gemm_a_b(static_cast<int>(rows), static_cast<int>(head_dim), static_cast<int>(nk), 1.0f,
               scores, static_cast<int>(key_block), v_block, v_ld, 1.0f, ws.acc.data(),
               static_cast<int>(head_dim));
    }
  }
}

// Normalises the item's rows and stores them; a query that saw no key gets zeros, lse = -inf; a
// poisoned row (running sum NaN) gets NaN.
template <typename T>
void write_rows(const SinkAttentionParams& p, const Plan& plan, const Item& it, const float* acc,
                const float* running_max, const float* running_sum) {
  T* out = static_cast<T*>(p.out);
  for (int64_t r = 0; r < it.rows; ++r) {
    const int64_t h = it.hkv * plan.group + r / it.nq;
    const int64_t i = it.i0 + r % it.nq;
    const int64_t row = (it.b * p.heads_q + h) * p.len_q + i;
    const float sum = running_sum[r];
    if (std::isnan(sum)) {
      std::fill_n(out + row * p.head_dim, p.head_dim, static_cast<T>(kNaN));
      p.lse[row] = kNaN;
      continue;
    }
    store_from_float(acc + r * p.head_dim, out + row * p.head_dim, p.head_dim,
                     sum > 0.0f ? 1.0f / sum : 0.0f);
    p.lse[row] = sum > 0.0f ? running_max[r] + std::log(sum) : kNegInf;
  }
}

// Merges an item's split partials (each with its own running max) into ws.
void combine_splits(const Plan& plan, const Item& it, int64_t item, int64_t head_dim,
                    const Partials& parts, Workspace& ws) {
  for (int64_t r = 0; r < it.rows; ++r) {
    float m = kNegInf;
    bool poisoned = false;
    for (int64_t s = 0; s < plan.splits; ++s) {
      const float split_max = parts.running_max[(item * plan.splits + s) * plan.max_rows + r];
      poisoned |= std::isnan(split_max);
      m = std::max(m, split_max);
    }
    float* acc = ws.acc.data() + r * head_dim;
    std::fill_n(acc, head_dim, 0.0f);
    if (poisoned) {  // one split saw a NaN or +inf logit: the whole row is NaN
      ws.running_max[r] = kNaN;
      ws.running_sum[r] = kNaN;
      continue;
    }
    float sum = 0.0f;
    for (int64_t s = 0; s < plan.splits && m != kNegInf; ++s) {
      const int64_t slot = (item * plan.splits + s) * plan.max_rows + r;
      const float weight = std::exp(parts.running_max[slot] - m);  // 0 for an empty split
      sum += parts.running_sum[slot] * weight;
      const Vec vw(weight);
      const float* part = parts.acc.data() + slot * head_dim;
      int64_t d = 0;
      for (; d + Vec::size() <= head_dim; d += Vec::size()) {
        (Vec::loadu(acc + d) + Vec::loadu(part + d) * vw).store(acc + d);
      }
      for (; d < head_dim; ++d) acc[d] += part[d] * weight;
    }
    ws.running_max[r] = m;
    ws.running_sum[r] = sum;
  }
}

// Runs fn(unit, workspace) for units [0, count) on ATen's threads, each thread taking the next
// unit when it is free (so uneven units — causal query blocks — balance themselves).
template <typename Fn>
void for_each_unit(int64_t count, const Plan& plan, int64_t head_dim, bool convert_kv, Fn&& fn) {
  std::atomic<int64_t> next{0};
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), count);
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    const SequentialBlas sequential_blas;
    Workspace ws(plan, head_dim, convert_kv);
    for (int64_t t = begin; t < end; ++t) {
      for (int64_t unit = next++; unit < count; unit = next++) fn(unit, ws);
    }
  });
}

template <typename T>
void forward_typed(const SinkAttentionParams& p) {
  const Plan plan = make_plan(p, at::get_num_threads());
  std::vector<int64_t> sinks(p.batch);
  resolve_sinks(p, sinks.data());
  const bool convert_kv = !std::is_same_v<T, float>;
  const int64_t head_dim = p.head_dim;

  if (plan.splits == 1) {
    for_each_unit(plan.items, plan, head_dim, convert_kv, [&](int64_t item, Workspace& ws) {
      const Item it = describe_item(p, plan, item);
      accumulate<T>(p, plan, it, sinks[it.b], it.key_lo, it.key_hi, ws);
      write_rows<T>(p, plan, it, ws.acc.data(), ws.running_max.data(), ws.running_sum.data());
    });
    return;
  }

  Partials parts(plan, head_dim);
  for_each_unit(plan.items * plan.splits, plan, head_dim, convert_kv, [&](int64_t unit, Workspace& ws) {
    const int64_t item = unit / plan.splits;
    const Item it = describe_item(p, plan, item);
    const auto [key_begin, key_end] = split_keys(plan, it, unit % plan.splits);
    accumulate<T>(p, plan, it, sinks[it.b], key_begin, key_end, ws);
    const int64_t slot = unit * plan.max_rows;
    std::copy_n(ws.acc.data(), it.rows * head_dim, parts.acc.data() + slot * head_dim);
    std::copy_n(ws.running_max.data(), it.rows, parts.running_max.data() + slot);
    std::copy_n(ws.running_sum.data(), it.rows, parts.running_sum.data() + slot);
  });
  for_each_unit(plan.items, plan, head_dim, /*convert_kv=*/false, [&](int64_t item, Workspace& ws) {
    const Item it = describe_item(p, plan, item);
    combine_splits(plan, it, item, head_dim, parts, ws);
    write_rows<T>(p, plan, it, ws.acc.data(), ws.running_max.data(), ws.running_sum.data());
  });
}

template <typename M>
int64_t first_visible_key(const SinkAttentionParams& p, int64_t b) {
  const M* mask = static_cast<const M*>(p.mask) + b * p.mask_stride[0];
  const int64_t heads = p.mask_stride[1] == 0 ? 1 : p.heads_q;
  const int64_t queries = p.mask_stride[2] == 0 ? 1 : p.len_q;
  for (int64_t j = 0; j < p.len_k; ++j) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < queries; ++i) {
        if (!score_rows::mask_hides(mask[h * p.mask_stride[1] + i * p.mask_stride[2] + j * p.mask_stride[3]])) {
          return j;
        }
      }
    }
  }
  return -1;
}

}  // namespace

void resolve_sinks(const SinkAttentionParams& p, int64_t* sinks) {
  for (int64_t b = 0; b < p.batch; ++b) {
    if (p.sink_index != nullptr) {
      sinks[b] = p.sink_index[b];
    } else if (p.mask_kind == MaskKind::None) {
      sinks[b] = 0;
    } else {
      score_rows::with_mask_type(p.mask_kind, [&](auto typed_null) {
        using M = std::remove_const_t<std::remove_pointer_t<decltype(typed_null)>>;
        sinks[b] = first_visible_key<M>(p, b);
      });
    }
  }
}

void sink_attention_forward(const SinkAttentionParams& p) {
  if (p.batch == 0 || p.heads_q == 0 || p.len_q == 0) return;
  switch (p.element_type) {
    case ElementType::Float32: forward_typed<float>(p); break;
    case ElementType::Float16: forward_typed<c10::Half>(p); break;
    case ElementType::BFloat16: forward_typed<c10::BFloat16>(p); break;
  }
}

}  // namespace zerotuning::cpu
