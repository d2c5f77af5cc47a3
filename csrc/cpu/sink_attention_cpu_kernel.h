// The CPU sink-attention kernel: flash-style (online softmax over key blocks), exact, and never
// holding more than one block of scores per thread.
#pragma once

#include <cstdint>

#include "../sink_attention_params.h"

namespace zerotuning::cpu {

// Fills p.out and p.lse. Inputs must already be validated (csrc/sink_attention_call.h).
void sink_attention_forward(const SinkAttentionParams& p);

// sinks[b] = p.sink_index[b] if given, else the first key that p.mask leaves visible to some
// query of some head in batch row b (0 without a mask, -1 if the mask hides every key).
void resolve_sinks(const SinkAttentionParams& p, int64_t* sinks);

// The vector instruction set this file was compiled for, and whether this CPU has it.
const char* compiled_isa();
bool cpu_supports_compiled_isa();

}  // namespace zerotuning::cpu
