// The CUDA implementations of one validated call (see cuda_path.h for which runs when). Each
// writes call.out and call.lse on `stream`.
#pragma once

#include <cuda_runtime_api.h>

#include "../sink_attention_call.h"

namespace zerotuning::cuda {

// Which of torch's kernels attends over keys 1.. in a merge path.
enum class RestKernel { Flash, Cudnn };

void run_split_kv(const SinkAttentionCall& call, cudaStream_t stream);

void run_sink_merge(const SinkAttentionCall& call, RestKernel rest, cudaStream_t stream);

// Whether torch's SDPA dispatcher would run cuDNN for the attention over keys 1.. that
// cudnn_merge launches (it honours torch.backends' enable flags and priority order).
bool torch_sdpa_picks_cudnn_for_rest(const SinkAttentionCall& call);

}  // namespace zerotuning::cuda
