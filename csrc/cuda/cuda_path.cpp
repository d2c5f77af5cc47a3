#include "cuda_path.h"

#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "run_paths.h"

namespace zerotuning::cuda {
namespace {

constexpr const char* kEnvironmentVariable = "ZEROTUNING_CUDA_PATH";

// Rows of 16-byte aligned elements: a 16-byte aligned start and strides in whole 16 bytes.
bool rows_aligned_16(const void* data, const int64_t* strides, int64_t element_size) {
  if (reinterpret_cast<std::uintptr_t>(data) % 16 != 0) return false;
  for (int d = 0; d < 3; ++d) {
    if (strides[d] * element_size % 16 != 0) return false;
  }
  return true;
}

// What both merge paths need.
std::string merge_blocker(const SinkAttentionParams& p) {
  if (p.element_type == ElementType::Float32) return "q is float32 (torch's fused kernels here take float16/bfloat16)";
  if (p.mask_kind != MaskKind::None) return "attn_mask is given";
  if (p.sink_index != nullptr) return "sink_index is given (the merge paths need the sink at key 0 in every row)";
  if (p.softcap > 0.0f) return "softcap is given";
  if (p.head_dim % 8 != 0) return "head_dim " + std::to_string(p.head_dim) + " is not a multiple of 8";
  if (p.len_k < 2) return "len_k " + std::to_string(p.len_k) + " < 2 (no key besides the sink)";
  if (!rows_aligned_16(p.q, p.q_stride, 2) || !rows_aligned_16(p.k, p.k_stride, 2) ||
      !rows_aligned_16(p.v, p.v_stride, 2)) {
    return "q, k or v rows are not 16-byte aligned (data pointer or strides)";
  }
  return "";
}

CudaPath forced_merge(CudaPath path, const std::string& blocker) {
  TORCH_CHECK(blocker.empty(), "zerotuning.sink_attention: ", kEnvironmentVariable, "=", cuda_path_name(path),
              ", but this call cannot take that path: ", blocker);
  return path;
}

}  // namespace

const char* cuda_path_name(CudaPath path) {
  switch (path) {
    case CudaPath::FlashMerge: return "flash_merge";
    case CudaPath::CudnnMerge: return "cudnn_merge";
    case CudaPath::SplitKv: break;
  }
  return "split_kv";
}

std::string flash_merge_blocker(const SinkAttentionParams& p) {
  std::string blocker = merge_blocker(p);
  if (blocker.empty() && p.sliding_window > 0 && !p.is_causal) blocker = "sliding_window is given without is_causal";
  return blocker;
}

std::string cudnn_merge_blocker(const SinkAttentionParams& p) {
  std::string blocker = merge_blocker(p);
  if (!blocker.empty()) return blocker;
  if (p.sliding_window > 0) return "sliding_window is given (torch's cuDNN attention has no window)";
  if (p.is_causal && p.len_q != p.len_k) {
    return "is_causal with len_q != len_k (cuDNN's causal diagonal is top-left, this op's is bottom-right)";
  }
  if (p.len_k < 3) return "len_k " + std::to_string(p.len_k) + " < 3 (cuDNN takes no single-key attention)";
  return "";
}

CudaPath choose_cuda_path(const SinkAttentionCall& call) {
  const SinkAttentionParams& p = call.params;
  const char* forced = std::getenv(kEnvironmentVariable);
  const std::string_view choice = forced == nullptr ? "auto" : forced;
  if (choice == "split_kv") return CudaPath::SplitKv;
  if (choice == "flash_merge") return forced_merge(CudaPath::FlashMerge, flash_merge_blocker(p));
  if (choice == "cudnn_merge") return forced_merge(CudaPath::CudnnMerge, cudnn_merge_blocker(p));
  TORCH_CHECK(choice == "auto" || choice.empty(), "zerotuning.sink_attention: ", kEnvironmentVariable,
              " must be auto, split_kv, flash_merge or cudnn_merge, got '", choice, "'");
  if (p.len_q <= kAutoSplitKvMaxLenQ) return CudaPath::SplitKv;
  if (cudnn_merge_blocker(p).empty() && torch_sdpa_picks_cudnn_for_rest(call)) return CudaPath::CudnnMerge;
  if (flash_merge_blocker(p).empty()) return CudaPath::FlashMerge;
  return CudaPath::SplitKv;
}

}  // namespace zerotuning::cuda
