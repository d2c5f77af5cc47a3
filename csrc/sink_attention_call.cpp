#include "sink_attention_call.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace zerotuning {
namespace {

constexpr const char* kOp = "zerotuning.sink_attention: ";
constexpr int64_t kMaxHeadDim = 256;
constexpr float kFloatMax = std::numeric_limits<float>::max();
constexpr float kFloatMinNormal = std::numeric_limits<float>::min();

std::string shape_of(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

void check_4d(const at::Tensor& t, const char* name, const char* layout) {
  TORCH_CHECK(t.dim() == 4, kOp, name, " must be a 4-D tensor ", layout, ", got shape ",
              shape_of(t));
}

ElementType element_type_of(const at::Tensor& q) {
  switch (q.scalar_type()) {
    case at::kFloat: return ElementType::Float32;
    case at::kHalf: return ElementType::Float16;
    case at::kBFloat16: return ElementType::BFloat16;
    default:
      TORCH_CHECK(false, kOp, "q must be float32, float16 or bfloat16, got ", q.scalar_type());
  }
}

MaskKind mask_kind_of(const at::Tensor& mask) {
  switch (mask.scalar_type()) {
    case at::kBool: return MaskKind::Bool;
    case at::kFloat: return MaskKind::Float32;
    case at::kHalf: return MaskKind::Float16;
    case at::kBFloat16: return MaskKind::BFloat16;
    default:
      TORCH_CHECK(false, kOp,
                  "attn_mask must be bool (True = attend) or float32/float16/bfloat16 "
                  "(additive), got ",
                  mask.scalar_type());
  }
}

// BLAS-style kernels need a unit stride along head_dim and rows at least head_dim apart.
// (Strides of size-1 dims are arbitrary, even in "contiguous" tensors: row_stride() fixes them.)
at::Tensor with_dense_rows(const at::Tensor& t) {
  // The CPU kernel passes the position stride to BLAS as an int leading dimension.
  const bool ok = (t.stride(3) == 1 || t.size(3) == 1) &&
                  (t.size(2) <= 1 || (t.stride(2) >= t.size(3) &&
                                      t.stride(2) <= std::numeric_limits<int32_t>::max()));
  return ok ? t : t.contiguous();
}

// The stride between positions, made a valid BLAS leading dimension when there is one position.
int64_t row_stride(const at::Tensor& t) { return t.size(2) <= 1 ? t.size(3) : t.stride(2); }

void check_same_device(const at::Tensor& t, const at::Tensor& q, const char* name) {
  TORCH_CHECK(t.device() == q.device(), kOp, name, " is on ", t.device(), " but q is on ",
              q.device(), "; expected all tensors on one device");
}

}  // namespace

SinkAttentionCall prepare_sink_attention(const at::Tensor& q, const at::Tensor& k,
                                         const at::Tensor& v, const at::Tensor& log_gamma,
                                         const std::optional<at::Tensor>& sink_index,
                                         const std::optional<at::Tensor>& attn_mask,
                                         bool is_causal, std::optional<double> scale,
                                         std::optional<double> softcap,
                                         std::optional<int64_t> sliding_window,
                                         bool check_values) {
  check_4d(q, "q", "[batch, heads_q, len_q, head_dim]");
  check_4d(k, "k", "[batch, heads_kv, len_k, head_dim]");
  check_4d(v, "v", "[batch, heads_kv, len_k, head_dim]");
  const ElementType element_type = element_type_of(q);
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), kOp,
              "q, k and v must share one dtype, got q ", q.scalar_type(), ", k ", k.scalar_type(),
              ", v ", v.scalar_type());
  check_same_device(k, q, "k");
  check_same_device(v, q, "v");

  const int64_t batch = q.size(0), heads_q = q.size(1), len_q = q.size(2), head_dim = q.size(3);
  const int64_t heads_kv = k.size(1), len_k = k.size(2);
  TORCH_CHECK(k.size(0) == batch, kOp, "k has batch size ", k.size(0), " but q has ", batch);
  TORCH_CHECK(v.sizes() == k.sizes(), kOp, "v must have the shape of k ", shape_of(k), ", got ",
              shape_of(v));
  TORCH_CHECK(k.size(3) == head_dim, kOp, "k has head_dim ", k.size(3), " but q has ", head_dim);
  TORCH_CHECK(head_dim >= 1 && head_dim <= kMaxHeadDim, kOp, "head_dim must be in [1, ",
              kMaxHeadDim, "], got ", head_dim);
  TORCH_CHECK(heads_kv >= 1 && heads_q % heads_kv == 0, kOp, "heads_q (", heads_q,
              ", q.size(1)) must be a multiple of heads_kv (", heads_kv, ", k.size(1))");

  TORCH_CHECK(log_gamma.dim() == 1 && log_gamma.size(0) == heads_q, kOp,
              "log_gamma must have shape [heads_q] = [", heads_q, "], got ", shape_of(log_gamma));
  TORCH_CHECK(log_gamma.scalar_type() == at::kFloat, kOp, "log_gamma must be float32, got ",
              log_gamma.scalar_type());
  check_same_device(log_gamma, q, "log_gamma");
  if (check_values) {
    // Plain loops over host memory: this runs once per attention call, so no tensor ops.
    const at::Tensor host = log_gamma.contiguous();
    const float* values = host.data_ptr<float>();
    for (int64_t h = 0; h < heads_q; ++h) {
      TORCH_CHECK(std::isfinite(values[h]), kOp,
                  "log_gamma must be finite (log of a gamma > 0), got ", values[h], " for head ", h);
    }
  }

  SinkAttentionCall call;
  SinkAttentionParams& p = call.params;
  p.batch = batch;
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.len_q = len_q;
  p.len_k = len_k;
  p.head_dim = head_dim;
  p.element_type = element_type;

  if (sink_index.has_value()) {
    const at::Tensor& s = *sink_index;
    TORCH_CHECK(s.dim() == 1 && s.size(0) == batch, kOp, "sink_index must have shape [batch] = [",
                batch, "], got ", shape_of(s));
    TORCH_CHECK(s.scalar_type() == at::kLong, kOp, "sink_index must be int64, got ",
                s.scalar_type());
    check_same_device(s, q, "sink_index");
    call.sink_index = s.contiguous();
    if (check_values) {
      const int64_t* values = call.sink_index.data_ptr<int64_t>();
      for (int64_t b = 0; b < batch; ++b) {
        TORCH_CHECK(values[b] >= -1 && values[b] < len_k, kOp,
                    "sink_index values must be in [-1, len_k) = [-1, ", len_k,
                    ") (-1 = no sink in that row), got ", values[b], " for batch row ", b);
      }
    }
    p.sink_index = call.sink_index.data_ptr<int64_t>();
  }

  if (attn_mask.has_value()) {
    const at::Tensor& m = *attn_mask;
    p.mask_kind = mask_kind_of(m);
    check_same_device(m, q, "attn_mask");
    const std::vector<int64_t> full = {batch, heads_q, len_q, len_k};
    bool broadcastable = m.dim() <= 4;
    for (int64_t d = 0; broadcastable && d < m.dim(); ++d) {
      const int64_t size = m.size(m.dim() - 1 - d), want = full[3 - d];
      broadcastable = size == want || size == 1;
    }
    TORCH_CHECK(broadcastable, kOp, "attn_mask of shape ", shape_of(m),
                " does not broadcast to [batch, heads_q, len_q, len_k] = ", at::IntArrayRef(full));
    call.mask = m.expand(full);
    p.mask = call.mask.data_ptr();
    for (int d = 0; d < 4; ++d) p.mask_stride[d] = full[d] == 1 ? 0 : call.mask.stride(d);
  }

  // The kernels compute in float32: a scalar is checked as the float32 it becomes.
  if (scale.has_value()) {
    TORCH_CHECK(std::isfinite(*scale), kOp, "scale must be finite, got ", *scale);
    TORCH_CHECK(std::isfinite(static_cast<float>(*scale)), kOp,
                "scale must be finite in float32 (|scale| <= ", kFloatMax, "), got ", *scale);
  }
  p.scale = static_cast<float>(scale.value_or(1.0 / std::sqrt(static_cast<double>(head_dim))));
  if (softcap.has_value()) {
    TORCH_CHECK(std::isfinite(*softcap) && *softcap > 0.0, kOp,
                "softcap must be a finite number > 0 (or None for no capping), got ", *softcap);
    // Below float32's smallest normal number 1 / softcap overflows (or softcap becomes 0,
    // which would mean no capping at all).
    const float as_float = static_cast<float>(*softcap);
    TORCH_CHECK(std::isfinite(as_float) && as_float >= kFloatMinNormal, kOp,
                "softcap must be in float32's normal range [", kFloatMinNormal, ", ", kFloatMax,
                "], got ", *softcap);
    p.softcap = as_float;
  }
  if (sliding_window.has_value()) {
    TORCH_CHECK(*sliding_window >= 1, kOp,
                "sliding_window must be >= 1 (or None for no window), got ", *sliding_window);
    // A window of len_k or more hides nothing; clamping keeps every position bound
    // (p - window + 1, ...) far from int64 overflow, and the window still counts as given.
    p.sliding_window = std::min<int64_t>(*sliding_window, std::max<int64_t>(len_k, 1));
  }
  p.is_causal = is_causal;

  call.q = with_dense_rows(q);
  call.k = with_dense_rows(k);
  call.v = with_dense_rows(v);
  call.log_gamma = log_gamma.contiguous();
  p.q = call.q.data_ptr();
  p.k = call.k.data_ptr();
  p.v = call.v.data_ptr();
  p.log_gamma = call.log_gamma.data_ptr<float>();
  for (int d = 0; d < 2; ++d) {
    p.q_stride[d] = call.q.stride(d);
    p.k_stride[d] = call.k.stride(d);
    p.v_stride[d] = call.v.stride(d);
  }
  p.q_stride[2] = row_stride(call.q);
  p.k_stride[2] = row_stride(call.k);
  p.v_stride[2] = row_stride(call.v);

  call.out = at::empty({batch, heads_q, len_q, head_dim}, q.options());
  call.lse = at::empty({batch, heads_q, len_q}, q.options().dtype(at::kFloat));
  p.out = call.out.data_ptr();
  p.lse = call.lse.data_ptr<float>();
  return call;
}

}  // namespace zerotuning
