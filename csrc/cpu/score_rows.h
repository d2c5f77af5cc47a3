// How one row of attention logits is formed from the raw scores q.k (softcap, mask, causal and
// window limits, the sink bias), and the element conversions around it. The forward and the
// backward kernels both include this, so the backward recomputes exactly the forward's logits.
// Compiled only into translation units built with the kernel's vector flags.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../sink_attention_params.h"

namespace zerotuning::cpu::score_rows {

using Vec = at::vec::Vectorized<float>;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---- masks --------------------------------------------------------------------------------

template <typename M>
inline bool mask_hides(M value) {
  if constexpr (std::is_same_v<M, bool>) {
    return !value;
  } else {
    // At or below the lowest finite value (or -inf). NaN does not hide: it is an additive NaN
    // and poisons the rows that see the key, as in zerotuning/reference.py.
    return static_cast<float>(value) <= static_cast<float>(std::numeric_limits<M>::lowest());
  }
}

template <typename M>
inline void apply_mask_row(float* scores, const M* mask, int64_t stride, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const M value = mask[j * stride];
    if constexpr (std::is_same_v<M, bool>) {
      scores[j] = value ? scores[j] : kNegInf;
    } else {
      scores[j] = mask_hides(value) ? kNegInf : scores[j] + static_cast<float>(value);
    }
  }
}

template <typename Fn>
inline void with_mask_type(MaskKind kind, Fn&& fn) {
  switch (kind) {
    case MaskKind::Bool: fn(static_cast<const bool*>(nullptr)); break;
    case MaskKind::Float32: fn(static_cast<const float*>(nullptr)); break;
    case MaskKind::Float16: fn(static_cast<const c10::Half*>(nullptr)); break;
    case MaskKind::BFloat16: fn(static_cast<const c10::BFloat16*>(nullptr)); break;
    case MaskKind::None: break;
  }
}

// ---- element conversion -------------------------------------------------------------------

template <typename T>
inline void load_as_float(const T* src, float* dst, int64_t n, float multiplier) {
  if constexpr (std::is_same_v<T, float>) {
    const Vec vm(multiplier);
    int64_t j = 0;
    for (; j + Vec::size() <= n; j += Vec::size()) (Vec::loadu(src + j) * vm).store(dst + j);
    for (; j < n; ++j) dst[j] = src[j] * multiplier;
  } else {
    using LowVec = at::vec::Vectorized<T>;
    const Vec vm(multiplier);
    int64_t j = 0;
    for (; j + LowVec::size() <= n; j += LowVec::size()) {
      auto [lo, hi] = at::vec::convert_to_float<T>(LowVec::loadu(src + j));
      (lo * vm).store(dst + j);
      (hi * vm).store(dst + j + Vec::size());
    }
    for (; j < n; ++j) dst[j] = static_cast<float>(src[j]) * multiplier;
  }
}

template <typename T>
inline void store_from_float(const float* src, T* dst, int64_t n, float multiplier) {
  if constexpr (std::is_same_v<T, float>) {
    const Vec vm(multiplier);
    int64_t j = 0;
    for (; j + Vec::size() <= n; j += Vec::size()) (Vec::loadu(src + j) * vm).store(dst + j);
    for (; j < n; ++j) dst[j] = src[j] * multiplier;
  } else {
    using LowVec = at::vec::Vectorized<T>;
    const Vec vm(multiplier);
    int64_t j = 0;
    for (; j + LowVec::size() <= n; j += LowVec::size()) {
      const Vec lo = Vec::loadu(src + j) * vm;
      const Vec hi = Vec::loadu(src + j + Vec::size()) * vm;
      at::vec::convert_from_float<T>(lo, hi).store(dst + j);
    }
    for (; j < n; ++j) dst[j] = static_cast<T>(src[j] * multiplier);
  }
}

// ---- one row of logits --------------------------------------------------------------------

// s := softcap * tanh(s / softcap), Gemma's logit capping (p.softcap > 0).
inline void softcap_row(float* s, int64_t n, float softcap) {
  const float inv = 1.0f / softcap;
  for (int64_t j = 0; j < n; ++j) s[j] = softcap * std::tanh(s[j] * inv);
}

// Turns capped scores s[0, n) of query (b, h, i) against keys j0 + [0, n) into logits: the
// additive mask, -inf for keys the mask, the causal limit or the window hides, and log(gamma_h)
// on the row's sink when this query can see it.
inline void mask_limit_and_bias_row(const SinkAttentionParams& p, float* s, int64_t n, int64_t j0,
                                    int64_t b, int64_t h, int64_t i, int64_t sink) {
  with_mask_type(p.mask_kind, [&](auto typed_null) {
    using M = std::remove_const_t<std::remove_pointer_t<decltype(typed_null)>>;
    const M* m = static_cast<const M*>(p.mask) + b * p.mask_stride[0] + h * p.mask_stride[1] +
                 i * p.mask_stride[2] + j0 * p.mask_stride[3];
    apply_mask_row(s, m, p.mask_stride[3], n);
  });
  // Causal and window limits of this row, relative to the block.
  const int64_t pos = i + p.len_k - p.len_q;
  const int64_t lo = p.sliding_window > 0 ? pos - p.sliding_window + 1 - j0 : 0;
  const int64_t hi = p.is_causal ? pos + 1 - j0 : n;
  for (int64_t j = 0; j < std::min(lo, n); ++j) s[j] = kNegInf;
  for (int64_t j = std::max<int64_t>(hi, 0); j < n; ++j) s[j] = kNegInf;
  // The ZeroTuning bias: log(gamma_h) on the row's sink, if this query can see it.
  if (sink >= j0 && sink < j0 + n && s[sink - j0] != kNegInf) s[sink - j0] += p.log_gamma[h];
}

// ---- online softmax -----------------------------------------------------------------------

constexpr float kPosInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

inline float row_max(const float* x, int64_t n) {
  return at::vec::reduce_all<float>(
      [](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, x, n);
}

// x := exp(x - m); returns the sum. exp(-inf - m) = 0 for hidden keys.
inline float exp_shifted_and_sum(float* x, int64_t n, float m) {
  const Vec vm(m);
  Vec vsum(0.0f);
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) {
    const Vec e = (Vec::loadu(x + j) - vm).exp_u20();
    e.store(x + j);
    vsum += e;
  }
  float sum = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, vsum);
  for (; j < n; ++j) {
    x[j] = std::exp(x[j] - m);
    sum += x[j];
  }
  return sum;
}

inline void scale_row(float* x, int64_t n, float factor) {
  const Vec vf(factor);
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) (Vec::loadu(x + j) * vf).store(x + j);
  for (; j < n; ++j) x[j] *= factor;
}

// One row's step of the online softmax over a tile of n logits s (final: softcapped, masked,
// biased). Turns s into the tile's unnormalised weights exp(s - new max), updates the row's
// running max and sum, and rescales its output accumulator acc[0, head_dim) to the new max. A
// NaN or +inf logit poisons the row (running max and sum NaN, for the rest of its keys too); a
// tile with nothing visible so far contributes nothing. Either way s is left all 0 then, so the
// caller may always add s V to acc.
inline void online_softmax_step(float* s, int64_t n, float& running_max, float& running_sum,
                                float* acc, int64_t head_dim) {
  const float old_max = running_max;
  const float tile_max = row_max(s, n);  // NaN if any score is NaN
  if (std::isnan(old_max) || std::isnan(tile_max) || tile_max == kPosInf) {
    running_max = kNaN;
    running_sum = kNaN;
    std::fill_n(s, n, 0.0f);
    return;
  }
  const float new_max = std::max(old_max, tile_max);
  if (new_max == kNegInf) {  // nothing visible yet (or only -inf logits): contribute nothing
    std::fill_n(s, n, 0.0f);
    return;
  }
  const float sum = exp_shifted_and_sum(s, n, new_max);
  const float correction = std::exp(old_max - new_max);  // 0 when old_max is -inf
  running_sum = running_sum * correction + sum;
  running_max = new_max;
  if (correction != 1.0f) scale_row(acc, head_dim, correction);
}

// C[m x n] += P[m x k] V[k x n] for a few rows, row-major: one vectorised axpy per (row, key).
inline void small_a_b_accumulate(int64_t m, int64_t n, int64_t k, const float* p, int64_t ldp,
                                 const float* v, int64_t ldv, float* c, int64_t ldc) {
  for (int64_t r = 0; r < m; ++r) {
    float* row = c + r * ldc;
    for (int64_t j = 0; j < k; ++j) {
      const float w = p[r * ldp + j];  // no skip at 0: 0 * inf must give NaN, as in the definition
      const Vec vw(w);
      const float* vj = v + j * ldv;
      int64_t d = 0;
      for (; d + Vec::size() <= n; d += Vec::size()) (Vec::loadu(row + d) + Vec::loadu(vj + d) * vw).store(row + d);
      for (; d < n; ++d) row[d] += vj[d] * w;
    }
  }
}

}  // namespace zerotuning::cpu::score_rows
