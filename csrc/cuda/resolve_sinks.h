// Finds each batch row's sink on the device when the caller gave no sink_index but a mask: the
// first key that the mask leaves visible to some query of some head of the row (its left
// padding length), -1 if the mask hides every key. Same rule as the CPU op's resolve_sinks.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../sink_attention_params.h"

namespace zerotuning::cuda {

// sinks: [p.batch] int64 on the device. Requires p.mask_kind != MaskKind::None.
void launch_resolve_sinks(const SinkAttentionParams& p, int64_t* sinks, cudaStream_t stream);

}  // namespace zerotuning::cuda
