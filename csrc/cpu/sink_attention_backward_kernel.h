// The CPU sink-attention backward kernel: flash-style, it recomputes the probabilities block by
// block from the forward's log-sum-exp and never holds more than one block of them per thread.
#pragma once

#include "../sink_attention_backward_params.h"

namespace zerotuning::cpu {

// Fills p.grad_q, grad_k, grad_v (summed over the query heads of each kv group) and
// grad_log_gamma. Inputs must already be validated (csrc/sink_attention_call.cpp).
void sink_attention_backward(const SinkAttentionBackwardParams& p);

}  // namespace zerotuning::cpu
