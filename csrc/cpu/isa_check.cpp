// Built without the kernel's vector flags, so it can run on any x86-64 CPU and say whether the
// kernel's instruction set is there before the kernel is entered.
#include <string>

#include "sink_attention_cpu_kernel.h"

#ifndef ZEROTUNING_CPU_ISA
#define ZEROTUNING_CPU_ISA "default"
#endif

namespace zerotuning::cpu {

const char* compiled_isa() { return ZEROTUNING_CPU_ISA; }

bool cpu_supports_compiled_isa() {
#if defined(__x86_64__) || defined(__i386__)
  const std::string isa = ZEROTUNING_CPU_ISA;
  if (isa == "avx512") {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma");
  }
  if (isa == "avx2") {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
  }
#endif
  return true;
}

}  // namespace zerotuning::cpu
