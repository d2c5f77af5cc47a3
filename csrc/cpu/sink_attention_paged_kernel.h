// Sink attention over vLLM's paged CPU KV cache (torch.ops.zerotuning.sink_attention_paged): the
// kernel's view of one call, as plain pointers and strides (validated in sink_attention_paged_cpu.cpp).
#pragma once

#include <cstdint>

#include "../sink_attention_params.h"

namespace zerotuning::cpu {

// The cache is vLLM's CPU layout (ISAs vec/vec16): kv_cache[block, kv_head] is block_size * 2 *
// head_dim contiguous elements, the keys transposed [head_dim, block_size] and then the values
// [block_size, head_dim]. Request r owns tokens [query_start_loc[r], query_start_loc[r + 1]) of
// the packed query, the last ones of its seq_lens[r] positions; its position j is slot
// j % block_size of block block_table[r, j / block_size], so its sink (position 0) is slot 0 of
// block_table[r, 0]. Query head h reads KV head h / (heads_q / heads_kv).
struct PagedAttentionParams {
  ElementType element_type = ElementType::Float32;  // query, cache and output
  int64_t num_requests = 0;
  int64_t heads_q = 0;
  int64_t heads_kv = 0;
  int64_t head_dim = 0;
  int64_t block_size = 0;

  const void* query = nullptr;  // [tokens, heads_q, head_dim], head_dim contiguous
  int64_t query_stride[2] = {0, 0};  // token, head (elements)
  void* output = nullptr;       // same shape and element type
  int64_t output_stride[2] = {0, 0};
  const void* kv_cache = nullptr;
  int64_t cache_stride[2] = {0, 0};  // block, kv head (elements)

  const int32_t* block_table = nullptr;  // [>= num_requests, max_blocks]
  int64_t block_table_stride = 0;        // between requests (elements)
  const int32_t* query_start_loc = nullptr;  // [num_requests + 1]
  const int32_t* seq_lens = nullptr;         // [num_requests]

  const float* log_gamma = nullptr;  // [heads_q]: added to key 0's logit after softcapping
  float scale = 1.0f;
  float softcap = 0.0f;  // 0 = no capping
};

// Writes every request's tokens of p.output; other tokens are left alone.
void sink_attention_paged_forward(const PagedAttentionParams& p);

}  // namespace zerotuning::cpu
