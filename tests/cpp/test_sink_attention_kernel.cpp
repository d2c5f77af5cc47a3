// The CPU kernel core against a naive double-precision reference written here from docs/method.md §1.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "../../csrc/cpu/sink_attention_cpu_kernel.h"

using zerotuning::ElementType;
using zerotuning::MaskKind;
using zerotuning::SinkAttentionParams;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Problem {
  int64_t batch, heads_q, heads_kv, len_q, len_k, head_dim;
  bool is_causal = false;
  float softcap = 0.0f;
  int64_t window = 0;
  std::vector<float> q, k, v, log_gamma;
  std::vector<int64_t> sinks;        // empty: let the kernel resolve them
  std::vector<char> bool_mask;       // [B, 1, Lq, Lk] when set (char: one byte per bool)
  std::vector<float> float_mask;     // [1, Hq, Lq, Lk] when set

  Problem(int64_t b, int64_t hq, int64_t hkv, int64_t lq, int64_t lk, int64_t d, unsigned seed)
      : batch(b), heads_q(hq), heads_kv(hkv), len_q(lq), len_k(lk), head_dim(d) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto fill = [&](std::vector<float>& x, size_t n) {
      x.resize(n);
      for (auto& value : x) value = normal(gen);
    };
    fill(q, b * hq * lq * d);
    fill(k, b * hkv * lk * d);
    fill(v, b * hkv * lk * d);
    fill(log_gamma, hq);
  }

  float scale() const { return 1.0f / std::sqrt(static_cast<float>(head_dim)); }

  bool mask_visible(int64_t b, int64_t h, int64_t i, int64_t j) const {
    if (!bool_mask.empty()) return bool_mask[(b * len_q + i) * len_k + j] != 0;
    if (!float_mask.empty()) return float_mask[(h * len_q + i) * len_k + j] > -kInf;
    return true;
  }

  int64_t sink_of(int64_t b) const {
    if (!sinks.empty()) return sinks[b];
    for (int64_t j = 0; j < len_k; ++j)
      for (int64_t h = 0; h < heads_q; ++h)
        for (int64_t i = 0; i < len_q; ++i)
          if (mask_visible(b, h, i, j)) return j;
    return -1;
  }

  // out [B, Hq, Lq, D] and lse [B, Hq, Lq] by the definition, one query row at a time.
  void reference(std::vector<double>& out, std::vector<double>& lse) const {
    out.assign(batch * heads_q * len_q * head_dim, 0.0);
    lse.assign(batch * heads_q * len_q, -kInf);
    const int64_t group = heads_q / heads_kv;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t sink = sink_of(b);
      for (int64_t h = 0; h < heads_q; ++h) {
        const int64_t hk = h / group;
        for (int64_t i = 0; i < len_q; ++i) {
          const int64_t pos = i + len_k - len_q;
          std::vector<double> s(len_k, -kInf);
          for (int64_t j = 0; j < len_k; ++j) {
            const bool visible = mask_visible(b, h, i, j) && (!is_causal || j <= pos) &&
                                 (window == 0 || j > pos - window);
            if (!visible) continue;
            double dot = 0.0;
            for (int64_t d = 0; d < head_dim; ++d)
              dot += double(q[((b * heads_q + h) * len_q + i) * head_dim + d]) *
                     double(k[((b * heads_kv + hk) * len_k + j) * head_dim + d]);
            double score = dot * scale();
            if (softcap > 0) score = softcap * std::tanh(score / softcap);
            if (!float_mask.empty()) score += float_mask[(h * len_q + i) * len_k + j];
            if (j == sink) score += log_gamma[h];
            s[j] = score;
          }
          double m = -kInf;
          for (double x : s) m = std::max(m, x);
          if (m == -kInf) continue;
          double sum = 0.0;
          for (double& x : s) sum += (x = std::exp(x - m));
          const int64_t row = (b * heads_q + h) * len_q + i;
          lse[row] = m + std::log(sum);
          for (int64_t j = 0; j < len_k; ++j)
            for (int64_t d = 0; d < head_dim; ++d)
              out[row * head_dim + d] += s[j] / sum * v[((b * heads_kv + hk) * len_k + j) * head_dim + d];
        }
      }
    }
  }

  SinkAttentionParams params(const void* q_data, const void* k_data, const void* v_data,
                             ElementType type, void* out, float* lse_out) const {
    SinkAttentionParams p;
    p.batch = batch;
    p.heads_q = heads_q;
    p.heads_kv = heads_kv;
    p.len_q = len_q;
    p.len_k = len_k;
    p.head_dim = head_dim;
    p.element_type = type;
    p.q = q_data;
    p.k = k_data;
    p.v = v_data;
    p.out = out;
    p.lse = lse_out;
    const int64_t q_s[3] = {heads_q * len_q * head_dim, len_q * head_dim, head_dim};
    const int64_t kv_s[3] = {heads_kv * len_k * head_dim, len_k * head_dim, head_dim};
    for (int d = 0; d < 3; ++d) {
      p.q_stride[d] = q_s[d];
      p.k_stride[d] = p.v_stride[d] = kv_s[d];
    }
    p.log_gamma = log_gamma.data();
    p.sink_index = sinks.empty() ? nullptr : sinks.data();
    if (!bool_mask.empty()) {
      p.mask_kind = MaskKind::Bool;
      p.mask = bool_mask.data();
      const int64_t s[4] = {len_q * len_k, 0, len_k, 1};
      std::copy(s, s + 4, p.mask_stride);
    } else if (!float_mask.empty()) {
      p.mask_kind = MaskKind::Float32;
      p.mask = float_mask.data();
      const int64_t s[4] = {0, len_q * len_k, len_k, 1};
      std::copy(s, s + 4, p.mask_stride);
    }
    p.is_causal = is_causal;
    p.scale = scale();
    p.softcap = softcap;
    p.sliding_window = window;
    return p;
  }

  void left_pad(const std::vector<int64_t>& pads) {
    bool_mask.assign(batch * len_q * len_k, 0);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t i = 0; i < len_q; ++i)
        for (int64_t j = pads[b]; j < len_k; ++j) bool_mask[(b * len_q + i) * len_k + j] = 1;
  }
};

void check_float32(const Problem& problem, double tolerance = 2e-5) {
  std::vector<double> want_out, want_lse;
  problem.reference(want_out, want_lse);
  std::vector<float> out(want_out.size(), NAN), lse(want_lse.size(), NAN);
  zerotuning::cpu::sink_attention_forward(problem.params(
      problem.q.data(), problem.k.data(), problem.v.data(), ElementType::Float32, out.data(), lse.data()));
  for (size_t i = 0; i < out.size(); ++i) REQUIRE(std::abs(out[i] - want_out[i]) <= tolerance);
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(want_lse[i])) {
      REQUIRE(std::isinf(lse[i]));
      REQUIRE(lse[i] < 0);
    } else {
      REQUIRE(std::abs(lse[i] - want_lse[i]) <= 1e-4);
    }
  }
}

}  // namespace

TEST_CASE("plain, causal and grouped-query attention match the reference", "[kernel]") {
  for (bool causal : {false, true}) {
    Problem mha(2, 4, 4, 13, 13, 32, 1);
    mha.is_causal = causal;
    check_float32(mha);
    Problem gqa(1, 8, 2, 9, 21, 64, 2);
    gqa.is_causal = causal;
    check_float32(gqa);
  }
}

TEST_CASE("decode over several key blocks matches the reference", "[kernel]") {
  Problem decode(2, 4, 1, 1, 1100, 64, 3);
  decode.is_causal = true;
  check_float32(decode);
}

TEST_CASE("decode split over more threads than work items matches the reference", "[kernel]") {
  const int previous = at::get_num_threads();
  for (int threads : {3, 8}) {
    at::set_num_threads(threads);
    Problem decode(1, 4, 1, 1, 1800, 64, 10 + threads);
    decode.is_causal = true;
    decode.left_pad({700});
    check_float32(decode);
  }
  at::set_num_threads(previous);
}

TEST_CASE("left padding: each row's sink is its pad length", "[kernel]") {
  Problem padded(3, 4, 2, 10, 10, 16, 4);
  padded.is_causal = true;
  padded.left_pad({0, 4, 9});
  check_float32(padded);
  std::vector<int64_t> sinks(3);
  zerotuning::cpu::resolve_sinks(padded.params(nullptr, nullptr, nullptr, ElementType::Float32, nullptr, nullptr),
                                 sinks.data());
  REQUIRE(sinks == std::vector<int64_t>{0, 4, 9});
}

TEST_CASE("explicit sinks, including rows without one", "[kernel]") {
  Problem p(3, 2, 2, 6, 8, 16, 5);
  p.is_causal = true;
  p.sinks = {0, 5, -1};
  check_float32(p);
}

TEST_CASE("softcap, sliding window and an additive per-head mask", "[kernel]") {
  Problem p(1, 4, 2, 12, 30, 32, 6);
  p.is_causal = true;
  p.softcap = 3.0f;
  p.window = 7;
  p.float_mask.assign(4 * 12 * 30, 0.0f);
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (auto& m : p.float_mask) m = uniform(gen);
  p.float_mask[5] = -std::numeric_limits<float>::infinity();
  check_float32(p);
}

TEST_CASE("a query that sees no key gets zeros and lse = -inf", "[kernel]") {
  Problem p(2, 2, 2, 4, 5, 8, 8);
  p.left_pad({5, 2});  // batch row 0 is all padding: no key, no sink
  check_float32(p);
  std::vector<int64_t> sinks(2);
  zerotuning::cpu::resolve_sinks(p.params(nullptr, nullptr, nullptr, ElementType::Float32, nullptr, nullptr),
                                 sinks.data());
  REQUIRE(sinks == std::vector<int64_t>{-1, 2});
}

TEST_CASE("bfloat16 inputs are accumulated in float", "[kernel]") {
  Problem p(1, 4, 2, 17, 40, 64, 9);
  p.is_causal = true;
  // Round the inputs to bfloat16 first so the reference sees exactly what the kernel sees.
  auto round_trip = [](std::vector<float>& x, std::vector<c10::BFloat16>& low) {
    low.resize(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      low[i] = c10::BFloat16(x[i]);
      x[i] = static_cast<float>(low[i]);
    }
  };
  std::vector<c10::BFloat16> q, k, v;
  round_trip(p.q, q);
  round_trip(p.k, k);
  round_trip(p.v, v);
  std::vector<double> want_out, want_lse;
  p.reference(want_out, want_lse);
  std::vector<c10::BFloat16> out(want_out.size());
  std::vector<float> lse(want_lse.size());
  zerotuning::cpu::sink_attention_forward(
      p.params(q.data(), k.data(), v.data(), ElementType::BFloat16, out.data(), lse.data()));
  for (size_t i = 0; i < out.size(); ++i) {
    // Only the final rounding to bfloat16 separates the two: half an ulp (2^-8 relative).
    REQUIRE(std::abs(static_cast<double>(out[i]) - want_out[i]) <= 1e-5 + std::abs(want_out[i]) * 0.0079);
  }
  for (size_t i = 0; i < lse.size(); ++i) REQUIRE(std::abs(lse[i] - want_lse[i]) <= 1e-4);
}
