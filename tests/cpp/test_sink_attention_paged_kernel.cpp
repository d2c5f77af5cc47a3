// The paged CPU kernel (vLLM's cache layout) against a naive double-precision reference written
// here from docs/method.md §1: causal per request, log(gamma_h) on each request's position 0.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include "../../csrc/cpu/sink_attention_paged_kernel.h"

using zerotuning::ElementType;
using zerotuning::cpu::PagedAttentionParams;

namespace {

struct PagedBatch {
  int64_t heads_q, heads_kv, head_dim, block_size;
  std::vector<std::pair<int64_t, int64_t>> requests;  // (seq_len, query_len)
  float softcap = 0.0f;
  std::vector<float> query, cache, log_gamma;  // cache [blocks, kv_heads, block_size, 2 * head_dim]
  std::vector<int32_t> block_table, starts, seq_lens;
  int64_t max_blocks = 0, tokens = 0;

  PagedBatch(int64_t hq, int64_t hkv, int64_t d, int64_t bs, std::vector<std::pair<int64_t, int64_t>> reqs, unsigned seed)
      : heads_q(hq), heads_kv(hkv), head_dim(d), block_size(bs), requests(std::move(reqs)) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    int64_t blocks = 0;
    starts.push_back(0);
    for (auto [seq_len, query_len] : requests) {
      max_blocks = std::max(max_blocks, (seq_len + bs - 1) / bs);
      blocks += (seq_len + bs - 1) / bs;
      starts.push_back(static_cast<int32_t>(starts.back() + query_len));
      seq_lens.push_back(static_cast<int32_t>(seq_len));
    }
    tokens = starts.back();
    // Blocks handed out in reverse order, so no request's blocks are contiguous or in order.
    block_table.assign(requests.size() * max_blocks, 0);
    int64_t next = blocks;
    for (size_t r = 0; r < requests.size(); ++r)
      for (int64_t b = 0; b < (requests[r].first + bs - 1) / bs; ++b) block_table[r * max_blocks + b] = --next;
    cache.resize(blocks * hkv * bs * 2 * d);
    for (auto& x : cache) x = normal(gen);
    query.resize(tokens * hq * d);
    for (auto& x : query) x = normal(gen);
    log_gamma.resize(hq);
    for (auto& x : log_gamma) x = normal(gen);
  }

  float scale() const { return 1.0f / std::sqrt(static_cast<float>(head_dim)); }

  // Key / value element d of position j of request r, kv head g: keys [D, block], values [block, D].
  double key(int64_t r, int64_t g, int64_t j, int64_t d) const {
    const int64_t slab = (block_table[r * max_blocks + j / block_size] * heads_kv + g) * block_size * 2 * head_dim;
    return cache[slab + d * block_size + j % block_size];
  }
  double value(int64_t r, int64_t g, int64_t j, int64_t d) const {
    const int64_t slab = (block_table[r * max_blocks + j / block_size] * heads_kv + g) * block_size * 2 * head_dim;
    return cache[slab + block_size * head_dim + (j % block_size) * head_dim + d];
  }

  std::vector<double> reference() const {
    std::vector<double> out(tokens * heads_q * head_dim, 0.0);
    const int64_t group = heads_q / heads_kv;
    for (size_t r = 0; r < requests.size(); ++r) {
      const auto [seq_len, query_len] = requests[r];
      for (int64_t i = 0; i < query_len; ++i) {
        const int64_t token = starts[r] + i, pos = seq_len - query_len + i;
        for (int64_t h = 0; h < heads_q; ++h) {
          std::vector<double> s(pos + 1);
          for (int64_t j = 0; j <= pos; ++j) {
            double dot = 0.0;
            for (int64_t d = 0; d < head_dim; ++d) dot += query[(token * heads_q + h) * head_dim + d] * key(r, h / group, j, d);
            double score = dot * scale();
            if (softcap > 0) score = softcap * std::tanh(score / softcap);
            s[j] = score + (j == 0 ? log_gamma[h] : 0.0);
          }
          double m = s[0], sum = 0.0;
          for (double x : s) m = std::max(m, x);
          for (double& x : s) sum += (x = std::exp(x - m));
          for (int64_t j = 0; j <= pos; ++j)
            for (int64_t d = 0; d < head_dim; ++d)
              out[(token * heads_q + h) * head_dim + d] += s[j] / sum * value(r, h / group, j, d);
        }
      }
    }
    return out;
  }

  std::vector<float> run() const {
    std::vector<float> out(tokens * heads_q * head_dim, NAN);
    PagedAttentionParams p;
    p.element_type = ElementType::Float32;
    p.num_requests = static_cast<int64_t>(requests.size());
    p.heads_q = heads_q;
    p.heads_kv = heads_kv;
    p.head_dim = head_dim;
    p.block_size = block_size;
    p.query = query.data();
    p.query_stride[0] = heads_q * head_dim;
    p.query_stride[1] = head_dim;
    p.output = out.data();
    p.output_stride[0] = heads_q * head_dim;
    p.output_stride[1] = head_dim;
    p.kv_cache = cache.data();
    p.cache_stride[0] = heads_kv * block_size * 2 * head_dim;
    p.cache_stride[1] = block_size * 2 * head_dim;
    p.block_table = block_table.data();
    p.block_table_stride = max_blocks;
    p.query_start_loc = starts.data();
    p.seq_lens = seq_lens.data();
    p.log_gamma = log_gamma.data();
    p.scale = scale();
    p.softcap = softcap;
    zerotuning::cpu::sink_attention_paged_forward(p);
    return out;
  }
};

void check(const PagedBatch& batch) {
  const std::vector<double> want = batch.reference();
  const std::vector<float> got = batch.run();
  for (size_t i = 0; i < got.size(); ++i) REQUIRE(std::abs(got[i] - want[i]) <= 2e-5);
}

}  // namespace

TEST_CASE("paged: decode steps, prefills and chunked prefills in one batch match the reference", "[paged]") {
  check(PagedBatch(4, 4, 32, 16, {{5, 1}, {40, 40}, {70, 9}, {1, 1}}, 21));
  check(PagedBatch(9, 3, 64, 128, {{300, 1}, {130, 130}, {600, 70}}, 22));  // several key tiles and query blocks
  check(PagedBatch(6, 1, 20, 7, {{33, 0}, {19, 4}, {8, 8}}, 23));             // a request with no query, odd sizes
}

TEST_CASE("paged: softcap is applied before the sink bias", "[paged]") {
  PagedBatch batch(4, 2, 16, 32, {{50, 50}, {90, 1}}, 24);
  for (auto& x : batch.query) x *= 5.0f;
  batch.softcap = 4.0f;
  check(batch);
}
