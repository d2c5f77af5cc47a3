// Which CUDA implementation serves a call. The rule is explicit, so no call ever lands on a
// path silently:
//
//   split_kv     the fused split-KV kernel (split_kv.h): every input the op accepts.
//   flash_merge  torch's flash-attention 2 over keys 1.. plus an exact merge of the sink
//                (sink_merge.h).
//   cudnn_merge  the same with torch's cuDNN attention over keys 1..
//
// Both merge paths need: float16/bfloat16; no attn_mask; no sink_index (so the sink is key 0
// in every row); no softcap; head_dim a multiple of 8; q, k, v rows 16-byte aligned; len_k >= 2.
// flash_merge also needs is_causal whenever there is a sliding_window. cudnn_merge also needs no
// sliding_window, len_q == len_k when is_causal (cuDNN's causal diagonal is top-left) and
// len_k >= 3.
//
// auto (default):
//   len_q <= kAutoSplitKvMaxLenQ (decode steps)           -> split_kv (no extra merge pass);
//   cudnn_merge can serve it and torch's own SDPA dispatcher
//     (at::_fused_sdp_choice) picks cuDNN for the keys-1.. attention -> cudnn_merge;
//   flash_merge can serve it                               -> flash_merge;
//   otherwise (masks, softcap, sink_index, float32, ...)   -> split_kv.
//
// The environment variable ZEROTUNING_CUDA_PATH=auto|split_kv|flash_merge|cudnn_merge
// overrides auto, read at every call; forcing a merge path on a call it cannot serve is an
// error naming the reason.
#pragma once

#include <string>

#include "../sink_attention_call.h"

namespace zerotuning::cuda {

enum class CudaPath { SplitKv, FlashMerge, CudnnMerge };

constexpr int64_t kAutoSplitKvMaxLenQ = 16;

const char* cuda_path_name(CudaPath path);

// Why this path cannot serve the call, or "" when it can.
std::string flash_merge_blocker(const SinkAttentionParams& p);
std::string cudnn_merge_blocker(const SinkAttentionParams& p);

CudaPath choose_cuda_path(const SinkAttentionCall& call);

}  // namespace zerotuning::cuda
