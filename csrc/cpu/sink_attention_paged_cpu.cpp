// CPU implementation of torch.ops.zerotuning.sink_attention_paged: every argument is checked
// here, with a message naming it, then the kernel (sink_attention_paged_kernel.cpp) runs.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "sink_attention_cpu_kernel.h"
#include "sink_attention_paged_kernel.h"

namespace zerotuning {
namespace {

constexpr const char* kOp = "zerotuning.sink_attention_paged: ";

std::string shape_of(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), kOp, name, " must be a CPU tensor, got one on ", t.device());
}

void check_int32_vector(const at::Tensor& t, const char* name, int64_t length, const char* what) {
  check_cpu(t, name);
  TORCH_CHECK(t.scalar_type() == at::kInt, kOp, name, " must be int32, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == length, kOp, name, " must have shape [", what, "] = [", length,
              "], got ", shape_of(t));
}

ElementType element_type_of(const at::Tensor& query) {
  switch (query.scalar_type()) {
    case at::kFloat: return ElementType::Float32;
    case at::kHalf: return ElementType::Float16;
    case at::kBFloat16: return ElementType::BFloat16;
    default: TORCH_CHECK(false, kOp, "query must be float32, float16 or bfloat16, got ", query.scalar_type());
  }
}

void sink_attention_paged_cpu(const at::Tensor& query, const at::Tensor& kv_cache, const at::Tensor& block_table,
                              const at::Tensor& query_start_loc, const at::Tensor& seq_lens,
                              const at::Tensor& log_gamma, double scale, double softcap, const at::Tensor& output) {
  static const bool isa_ok = cpu::cpu_supports_compiled_isa();
  TORCH_CHECK(isa_ok, kOp, "this build's CPU kernel uses ", cpu::compiled_isa(),
              " instructions, which this CPU lacks; rebuild zerotuning on this machine");

  check_cpu(query, "query");
  TORCH_CHECK(query.dim() == 3, kOp, "query must be a 3-D tensor [tokens, heads, head_dim], got shape ",
              shape_of(query));
  const ElementType element_type = element_type_of(query);
  const int64_t tokens = query.size(0), heads_q = query.size(1), head_dim = query.size(2);
  TORCH_CHECK(head_dim >= 1, kOp, "query must have head_dim >= 1, got shape ", shape_of(query));
  TORCH_CHECK(query.stride(2) == 1, kOp, "query must be contiguous along head_dim (stride 1), got strides ",
              query.strides());

  check_cpu(output, "output");
  TORCH_CHECK(output.sizes() == query.sizes(), kOp, "output must have the shape of query ", shape_of(query),
              ", got ", shape_of(output));
  TORCH_CHECK(output.scalar_type() == query.scalar_type(), kOp, "output must have query's dtype ",
              query.scalar_type(), ", got ", output.scalar_type());
  TORCH_CHECK(output.stride(2) == 1, kOp, "output must be contiguous along head_dim (stride 1), got strides ",
              output.strides());

  check_cpu(kv_cache, "kv_cache");
  TORCH_CHECK(kv_cache.dim() == 4 && kv_cache.size(3) == 2 * head_dim, kOp,
              "kv_cache must be vLLM's CPU cache [num_blocks, kv_heads, block_size, 2 * head_dim] = [*, *, *, ",
              2 * head_dim, "], got shape ", shape_of(kv_cache));
  TORCH_CHECK(kv_cache.scalar_type() == query.scalar_type(), kOp, "kv_cache must have query's dtype ",
              query.scalar_type(), " (a quantised cache is not supported), got ", kv_cache.scalar_type());
  const int64_t num_blocks = kv_cache.size(0), heads_kv = kv_cache.size(1), block_size = kv_cache.size(2);
  TORCH_CHECK(block_size >= 1 && heads_kv >= 1, kOp, "kv_cache must have kv_heads >= 1 and block_size >= 1, got shape ",
              shape_of(kv_cache));
  TORCH_CHECK(kv_cache.stride(3) == 1 && kv_cache.stride(2) == 2 * head_dim, kOp,
              "kv_cache must be contiguous within each [block_size, 2 * head_dim] slab, got strides ",
              kv_cache.strides());
  TORCH_CHECK(heads_q % heads_kv == 0, kOp, "query's heads (", heads_q, ") must be a multiple of kv_cache's kv_heads (",
              heads_kv, ")");

  check_cpu(seq_lens, "seq_lens");
  TORCH_CHECK(seq_lens.dim() == 1, kOp, "seq_lens must be a 1-D tensor [num_requests], got shape ", shape_of(seq_lens));
  const int64_t num_requests = seq_lens.size(0);
  check_int32_vector(seq_lens, "seq_lens", num_requests, "num_requests");
  check_int32_vector(query_start_loc, "query_start_loc", num_requests + 1, "num_requests + 1");
  check_cpu(block_table, "block_table");
  TORCH_CHECK(block_table.scalar_type() == at::kInt, kOp, "block_table must be int32, got ", block_table.scalar_type());
  TORCH_CHECK(block_table.dim() == 2 && block_table.size(0) >= num_requests, kOp,
              "block_table must have shape [>= num_requests, max_blocks] with num_requests = ", num_requests,
              " (seq_lens), got ", shape_of(block_table));
  check_cpu(log_gamma, "log_gamma");
  TORCH_CHECK(log_gamma.scalar_type() == at::kFloat, kOp, "log_gamma must be float32, got ", log_gamma.scalar_type());
  TORCH_CHECK(log_gamma.dim() == 1 && log_gamma.size(0) == heads_q, kOp, "log_gamma must have shape [heads] = [",
              heads_q, "], got ", shape_of(log_gamma));

  TORCH_CHECK(std::isfinite(scale) && std::isfinite(static_cast<float>(scale)), kOp,
              "scale must be finite in float32, got ", scale);
  TORCH_CHECK(std::isfinite(softcap) && softcap >= 0.0 && std::isfinite(static_cast<float>(softcap)), kOp,
              "softcap must be a finite number >= 0 (0 = no capping), got ", softcap);
  TORCH_CHECK(softcap == 0.0 || static_cast<float>(softcap) >= std::numeric_limits<float>::min(), kOp,
              "softcap must be 0 or at least float32's smallest normal number ", std::numeric_limits<float>::min(),
              ", got ", softcap);

  // Values: plain loops over the (small) index tensors, once per call.
  const at::Tensor starts_c = query_start_loc.contiguous(), lens_c = seq_lens.contiguous();
  const at::Tensor table_c = block_table.stride(1) == 1 ? block_table : block_table.contiguous();
  const at::Tensor gamma_c = log_gamma.contiguous();
  const int32_t* starts = starts_c.data_ptr<int32_t>();
  const int32_t* lens = lens_c.data_ptr<int32_t>();
  const float* gammas = gamma_c.data_ptr<float>();
  for (int64_t h = 0; h < heads_q; ++h) {
    TORCH_CHECK(!std::isnan(gammas[h]) && gammas[h] != std::numeric_limits<float>::infinity(), kOp,
                "log_gamma must be < +inf and not NaN (log of a gamma in [0, inf)), got ", gammas[h], " for head ", h);
  }
  TORCH_CHECK(starts[0] == 0, kOp, "query_start_loc must start at 0, got ", starts[0]);
  const int64_t max_blocks = block_table.size(1);
  for (int64_t r = 0; r < num_requests; ++r) {
    const int64_t len_q = static_cast<int64_t>(starts[r + 1]) - starts[r], seq_len = lens[r];
    TORCH_CHECK(len_q >= 0 && starts[r + 1] <= tokens, kOp,
                "query_start_loc must be non-decreasing and at most query's tokens (", tokens, "), got ", starts[r],
                " then ", starts[r + 1], " for request ", r);
    TORCH_CHECK(seq_len >= len_q, kOp, "seq_lens[", r, "] = ", seq_len, " is shorter than the request's ", len_q,
                " queries (query_start_loc)");
    if (len_q == 0) continue;
    const int64_t needed = (seq_len + block_size - 1) / block_size;
    TORCH_CHECK(needed <= max_blocks, kOp, "seq_lens[", r, "] = ", seq_len, " needs ", needed, " blocks of ", block_size,
                " but block_table has ", max_blocks, " columns");
    const int32_t* row = table_c.data_ptr<int32_t>() + r * table_c.stride(0);
    for (int64_t b = 0; b < needed; ++b) {
      TORCH_CHECK(row[b] >= 0 && row[b] < num_blocks, kOp, "block_table[", r, ", ", b, "] = ", row[b],
                  " is not a block of kv_cache (", num_blocks, " blocks)");
    }
  }

  cpu::PagedAttentionParams p;
  p.element_type = element_type;
  p.num_requests = num_requests;
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.head_dim = head_dim;
  p.block_size = block_size;
  p.query = query.data_ptr();
  p.query_stride[0] = query.stride(0);
  p.query_stride[1] = query.stride(1);
  p.output = output.data_ptr();
  p.output_stride[0] = output.stride(0);
  p.output_stride[1] = output.stride(1);
  p.kv_cache = kv_cache.data_ptr();
  p.cache_stride[0] = kv_cache.stride(0);
  p.cache_stride[1] = kv_cache.stride(1);
  p.block_table = table_c.data_ptr<int32_t>();
  p.block_table_stride = table_c.stride(0);
  p.query_start_loc = starts;
  p.seq_lens = lens;
  p.log_gamma = gammas;
  p.scale = static_cast<float>(scale);
  p.softcap = static_cast<float>(softcap);
  cpu::sink_attention_paged_forward(p);
}

}  // namespace
}  // namespace zerotuning

TORCH_LIBRARY_IMPL(zerotuning, CPU, m) {
  m.impl("sink_attention_paged", &zerotuning::sink_attention_paged_cpu);
}
