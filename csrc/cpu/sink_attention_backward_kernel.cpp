// CPU sink-attention backward. With z the logits (softcapped scores, mask, limits, the sink
// bias), P = exp(z - lse) the forward's probabilities and dO the output gradient:
//   dP = dO V^T,  dZ = P * (dP - delta),  delta = rowsum(dO * O) - grad_lse,
//   dV = P^T dO,  dS = dZ * softcap'(s),  dQ = scale dS K,  dK = scale dS^T Q,
//   dlog_gamma[h] = sum over rows and queries of dZ at the sink = p_qs <dO_q, v_s - O_q>.
// One work unit = (batch row, kv head, chunk of key blocks). A unit owns dK and dV of its keys
// (so grouped-query heads are summed without atomics) and loops over the query blocks that can
// see them; dQ gets one float accumulator per key chunk, summed at the end. Chunks > 1 only when
// there are fewer (batch row, kv head) pairs than threads.
#include "sink_attention_backward_kernel.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>
#include <vector>

#include "blas.h"
#include "sink_attention_cpu_kernel.h"
#include "score_rows.h"

namespace zerotuning::cpu {
namespace {

using score_rows::kNegInf;
using score_rows::load_as_float;
using score_rows::store_from_float;
using score_rows::Vec;

// Rows (query head x position) per query block and keys per block: the two [rows x keys]
// blocks (P, dP) and the [keys x head_dim] accumulators of dK and dV stay in L2.
constexpr int64_t kTargetRows = 64;
constexpr int64_t kKeyBlock = 128;

struct Plan {
  int64_t group = 1;      // query heads per kv head
  int64_t block_q = 1;    // query positions per block
  int64_t key_block = kKeyBlock;
  int64_t key_blocks = 0;
  int64_t blocks_per_chunk = 1;
  int64_t chunks = 1;     // key chunks per (batch row, kv head)
  int64_t heads_rows = 0;  // batch x kv heads
  int64_t units = 0;
};

Plan make_plan(const SinkAttentionParams& p, int64_t threads) {
  Plan plan;
  plan.group = p.heads_q / p.heads_kv;
  plan.block_q = std::max<int64_t>(1, std::min<int64_t>(p.len_q, kTargetRows / plan.group));
  plan.key_block = std::min<int64_t>(kKeyBlock, std::max<int64_t>(p.len_k, 1));
  plan.key_blocks = (p.len_k + plan.key_block - 1) / plan.key_block;
  plan.heads_rows = p.batch * p.heads_kv;
  const int64_t wanted = (threads + plan.heads_rows - 1) / plan.heads_rows;
  plan.chunks = std::max<int64_t>(1, std::min(wanted, plan.key_blocks));
  plan.blocks_per_chunk = std::max<int64_t>(1, (plan.key_blocks + plan.chunks - 1) / plan.chunks);
  plan.chunks = std::max<int64_t>(1, (plan.key_blocks + plan.blocks_per_chunk - 1) / plan.blocks_per_chunk);
  plan.units = plan.heads_rows * plan.chunks;
  return plan;
}

struct Workspace {
  std::vector<float> k, v, grad_k, grad_v, q, grad_out, probs, grad_probs, softcap_slope;
  std::vector<float> lse, delta;
  Workspace(const Plan& plan, int64_t head_dim, bool softcap) {
    const int64_t rows = plan.group * plan.block_q;
    k.resize(plan.key_block * head_dim);
    v.resize(plan.key_block * head_dim);
    grad_k.resize(plan.key_block * head_dim);
    grad_v.resize(plan.key_block * head_dim);
    q.resize(rows * head_dim);
    grad_out.resize(rows * head_dim);
    probs.resize(rows * plan.key_block);
    grad_probs.resize(rows * plan.key_block);
    softcap_slope.resize(softcap ? rows * plan.key_block : 0);
    lse.resize(rows);
    delta.resize(rows);
  }
};

// Where the per-unit results go: dQ accumulators (one per key chunk) and, per (batch row, query
// head), the log-gamma gradient of the unit that holds the row's sink.
struct Accumulators {
  float* grad_q = nullptr;  // [chunks][B, Hq, Lq, D]
  std::vector<float> owned_grad_q;
  std::vector<double> grad_log_gamma;  // [B, Hq]
  const float* delta = nullptr;        // [B, Hq, Lq]
};

// delta[row] = <dO_row, O_row> - grad_lse[row], in float.
template <typename T>
std::vector<float> row_deltas(const SinkAttentionBackwardParams& bp) {
  const SinkAttentionParams& p = bp.forward;
  const int64_t rows = p.batch * p.heads_q * p.len_q, d = p.head_dim;
  std::vector<float> delta(rows);
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> grad_out(d), out(d);
    for (int64_t r = begin; r < end; ++r) {
      load_as_float(static_cast<const T*>(bp.grad_out) + r * d, grad_out.data(), d, 1.0f);
      load_as_float(static_cast<const T*>(p.out) + r * d, out.data(), d, 1.0f);
      float dot = 0.0f;
      for (int64_t j = 0; j < d; ++j) dot += grad_out[j] * out[j];
      delta[r] = dot - (bp.grad_lse != nullptr ? bp.grad_lse[r] : 0.0f);
    }
  });
  return delta;
}

// P := exp(z - lse) and dP := dZ * softcap slope, where dZ = P * (dP - delta). Returns dZ at
// column `sink_col` (0 when it is outside the block). A row with lse = -inf saw no key: zeros.
// A poisoned row (lse NaN) or a NaN delta (a NaN in O or dO) gives NaN to every key with a
// logit above -inf and 0 to the others, as autograd through zerotuning/reference.py does:
// exp(-inf - NaN) would otherwise spread NaN to keys the row cannot see.
inline float probabilities_and_logit_grads(float* probs, float* grad_probs, const float* slope,
                                           int64_t n, float lse, float delta, int64_t sink_col) {
  if (lse == kNegInf) {
    std::fill_n(probs, n, 0.0f);
    std::fill_n(grad_probs, n, 0.0f);
    return 0.0f;
  }
  int64_t j = 0;
  if (std::isnan(lse) || std::isnan(delta)) {
    for (; j < n; ++j) {
      const bool weighs = probs[j] > kNegInf || std::isnan(probs[j]);
      probs[j] = weighs ? std::exp(probs[j] - lse) : 0.0f;
      grad_probs[j] = weighs ? probs[j] * (grad_probs[j] - delta) : 0.0f;
    }
  }
  const Vec vl(lse), vd(delta);
  for (; j + Vec::size() <= n; j += Vec::size()) {
    const Vec pr = (Vec::loadu(probs + j) - vl).exp_u20();
    pr.store(probs + j);
    (pr * (Vec::loadu(grad_probs + j) - vd)).store(grad_probs + j);
  }
  for (; j < n; ++j) {
    probs[j] = std::exp(probs[j] - lse);
    grad_probs[j] = probs[j] * (grad_probs[j] - delta);
  }
  const float sink_grad = sink_col >= 0 && sink_col < n ? grad_probs[sink_col] : 0.0f;
  if (slope != nullptr) {
    for (j = 0; j + Vec::size() <= n; j += Vec::size()) {
      (Vec::loadu(grad_probs + j) * Vec::loadu(slope + j)).store(grad_probs + j);
    }
    for (; j < n; ++j) grad_probs[j] *= slope[j];
  }
  return sink_grad;
}

template <typename T>
void backward_unit(const SinkAttentionBackwardParams& bp, const Plan& plan, const int64_t* sinks,
                   int64_t unit, Workspace& ws, Accumulators& acc) {
  const SinkAttentionParams& p = bp.forward;
  const int64_t d = p.head_dim, key_block = plan.key_block;
  // Chunk-major numbering: under a causal mask the first chunks see the most queries.
  const int64_t chunk = unit / plan.heads_rows;
  const int64_t b = (unit % plan.heads_rows) / p.heads_kv, hkv = unit % p.heads_kv;
  const int64_t key_begin = chunk * plan.blocks_per_chunk * key_block;
  const int64_t key_end = std::min(p.len_k, key_begin + plan.blocks_per_chunk * key_block);
  const int64_t offset = p.len_k - p.len_q;  // absolute position of query i is i + offset
  const int64_t sink = sinks[b];
  float* grad_q = acc.grad_q + chunk * p.batch * p.heads_q * p.len_q * d;

  const T* k_base = static_cast<const T*>(p.k) + b * p.k_stride[0] + hkv * p.k_stride[1];
  const T* v_base = static_cast<const T*>(p.v) + b * p.v_stride[0] + hkv * p.v_stride[1];
  T* grad_k_base = static_cast<T*>(bp.grad_k) + ((b * p.heads_kv + hkv) * p.len_k) * d;
  T* grad_v_base = static_cast<T*>(bp.grad_v) + ((b * p.heads_kv + hkv) * p.len_k) * d;

  for (int64_t j0 = key_begin; j0 < key_end; j0 += key_block) {
    const int64_t nk = std::min(key_block, key_end - j0);
    for (int64_t j = 0; j < nk; ++j) {
      load_as_float(k_base + (j0 + j) * p.k_stride[2], ws.k.data() + j * d, d, 1.0f);
      load_as_float(v_base + (j0 + j) * p.v_stride[2], ws.v.data() + j * d, d, 1.0f);
    }
    std::fill_n(ws.grad_k.data(), nk * d, 0.0f);
    std::fill_n(ws.grad_v.data(), nk * d, 0.0f);

    // Queries that may see a key of this block by position (the mask may hide more).
    const int64_t q_lo = p.is_causal ? std::clamp<int64_t>(j0 - offset, 0, p.len_q) : 0;
    const int64_t q_hi = p.sliding_window > 0
                             ? std::clamp<int64_t>(j0 + nk - 1 + p.sliding_window - offset, 0, p.len_q)
                             : p.len_q;
    for (int64_t i0 = q_lo; i0 < q_hi; i0 += plan.block_q) {
      const int64_t nq = std::min(plan.block_q, q_hi - i0), rows = plan.group * nq;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t h = hkv * plan.group + r / nq, i = i0 + r % nq;
        const int64_t row = (b * p.heads_q + h) * p.len_q + i;
        load_as_float(static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1] + i * p.q_stride[2],
                      ws.q.data() + r * d, d, p.scale);
        load_as_float(static_cast<const T*>(bp.grad_out) + row * d, ws.grad_out.data() + r * d, d, 1.0f);
        ws.lse[r] = p.lse[row];
        ws.delta[r] = acc.delta[row];
      }
      float* probs = ws.probs.data();
      float* grad_probs = ws.grad_probs.data();
      const int ld = static_cast<int>(key_block), di = static_cast<int>(d);
      gemm_a_bt(static_cast<int>(rows), static_cast<int>(nk), di, 1.0f, ws.q.data(), di,
                ws.k.data(), di, 0.0f, probs, ld);
      gemm_a_bt(static_cast<int>(rows), static_cast<int>(nk), di, 1.0f, ws.grad_out.data(), di,
                ws.v.data(), di, 0.0f, grad_probs, ld);

      for (int64_t r = 0; r < rows; ++r) {
        const int64_t h = hkv * plan.group + r / nq, i = i0 + r % nq;
        float* s = probs + r * key_block;
        float* slope = nullptr;
        if (p.softcap > 0.0f) {
          score_rows::softcap_row(s, nk, p.softcap);
          slope = ws.softcap_slope.data() + r * key_block;
          const float inv = 1.0f / p.softcap;
          for (int64_t j = 0; j < nk; ++j) slope[j] = 1.0f - (s[j] * inv) * (s[j] * inv);
        }
        score_rows::mask_limit_and_bias_row(p, s, nk, j0, b, h, i, sink);
        const float sink_grad = probabilities_and_logit_grads(
            s, grad_probs + r * key_block, slope, nk, ws.lse[r], ws.delta[r], sink - j0);
        // Only the unit holding the sink writes this (b, h) entry.
        if (sink >= j0 && sink < j0 + nk) acc.grad_log_gamma[b * p.heads_q + h] += sink_grad;
      }

      gemm_at_b(static_cast<int>(nk), di, static_cast<int>(rows), 1.0f, probs, ld,
                ws.grad_out.data(), di, 1.0f, ws.grad_v.data(), di);
      // ws.q carries the scale already: dK = scale dS^T Q = dS^T (scale Q).
      gemm_at_b(static_cast<int>(nk), di, static_cast<int>(rows), 1.0f, grad_probs, ld,
                ws.q.data(), di, 1.0f, ws.grad_k.data(), di);
      for (int64_t g = 0; g < plan.group; ++g) {
        const int64_t h = hkv * plan.group + g;
        gemm_a_b(static_cast<int>(nq), di, static_cast<int>(nk), p.scale, grad_probs + g * nq * key_block,
                 ld, ws.k.data(), di, 1.0f, grad_q + ((b * p.heads_q + h) * p.len_q + i0) * d, di);
      }
    }
    store_from_float(ws.grad_k.data(), grad_k_base + j0 * d, nk * d, 1.0f);
    store_from_float(ws.grad_v.data(), grad_v_base + j0 * d, nk * d, 1.0f);
  }
}

template <typename T>
void backward_typed(const SinkAttentionBackwardParams& bp) {
  const SinkAttentionParams& p = bp.forward;
  const Plan plan = make_plan(p, at::get_num_threads());
  std::vector<int64_t> sinks(p.batch);
  resolve_sinks(p, sinks.data());
  const std::vector<float> delta = row_deltas<T>(bp);
  const int64_t q_elements = p.batch * p.heads_q * p.len_q * p.head_dim;

  Accumulators acc;
  acc.delta = delta.data();
  acc.grad_log_gamma.assign(p.batch * p.heads_q, 0.0);
  const bool direct = std::is_same_v<T, float> && plan.chunks == 1;
  if (direct) {
    acc.grad_q = static_cast<float*>(bp.grad_q);  // zero-filled by the caller
  } else {
    acc.owned_grad_q.assign(plan.chunks * q_elements, 0.0f);
    acc.grad_q = acc.owned_grad_q.data();
  }

  // Threads take the next unit when free: causal chunks differ in cost.
  std::atomic<int64_t> next{0};
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), plan.units);
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    const SequentialBlas sequential_blas;
    Workspace ws(plan, p.head_dim, p.softcap > 0.0f);
    for (int64_t t = begin; t < end; ++t) {
      for (int64_t unit = next++; unit < plan.units; unit = next++) backward_unit<T>(bp, plan, sinks.data(), unit, ws, acc);
    }
  });

  if (!direct) {
    at::parallel_for(0, q_elements, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t c = 1; c < plan.chunks; ++c) {
        const float* part = acc.grad_q + c * q_elements;
        for (int64_t e = begin; e < end; ++e) acc.grad_q[e] += part[e];
      }
      store_from_float(acc.grad_q + begin, static_cast<T*>(bp.grad_q) + begin, end - begin, 1.0f);
    });
  }
  for (int64_t h = 0; h < p.heads_q; ++h) {
    double sum = 0.0;
    for (int64_t b = 0; b < p.batch; ++b) sum += acc.grad_log_gamma[b * p.heads_q + h];
    bp.grad_log_gamma[h] = static_cast<float>(sum);
  }
}

}  // namespace

void sink_attention_backward(const SinkAttentionBackwardParams& bp) {
  const SinkAttentionParams& p = bp.forward;
  if (p.batch == 0 || p.heads_q == 0 || p.len_q == 0 || p.len_k == 0) return;  // gradients stay 0
  switch (p.element_type) {
    case ElementType::Float32: backward_typed<float>(bp); break;
    case ElementType::Float16: backward_typed<c10::Half>(bp); break;
    case ElementType::BFloat16: backward_typed<c10::BFloat16>(bp); break;
  }
}

}  // namespace zerotuning::cpu
