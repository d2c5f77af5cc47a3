// Device helpers shared by the CUDA sink-attention kernels: element conversions, 16-byte
// loads, mask decoding and warp reductions. Torch builds CUDA code with the implicit half/bf16
// conversions disabled, so every conversion here is an explicit intrinsic.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace zerotuning::cuda {

constexpr float kNegInf = -__builtin_huge_valf();
constexpr float kPosInf = __builtin_huge_valf();
constexpr float kNaN = __builtin_nanf("");

// A logit that poisons its row (NaN or +inf): the row's output and lse become NaN.
__device__ __forceinline__ bool poisons(float logit) { return !(logit < kPosInf); }

// ---- elements ---------------------------------------------------------------------------------

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// One 16-byte chunk of a row: 4 floats or 8 halves.
template <typename T>
struct Chunk {
  static constexpr int kElems = 16 / sizeof(T);
};

// Converts the kElems elements of a 16-byte chunk (held as a uint4) to floats.
template <typename T>
__device__ __forceinline__ void chunk_to_float(const uint4& raw, float* out) {
  const T* elems = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int e = 0; e < Chunk<T>::kElems; ++e) out[e] = to_float(elems[e]);
}

template <typename T>
__device__ __forceinline__ uint4 chunk_from_float(const float* in) {
  uint4 raw;
  T* elems = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int e = 0; e < Chunk<T>::kElems; ++e) elems[e] = from_float<T>(in[e]);
  return raw;
}

// ---- asynchronous global -> shared copies (sm_80+) ------------------------------------------

// Copies 16 bytes, or writes 16 zero bytes when `valid` is false (src is then not read).
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src),
               "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most `Pending` committed groups are still in flight.
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
}

// ---- masks ------------------------------------------------------------------------------------

// HuggingFace writes "masked" as the lowest finite value of the mask's dtype; at or below it
// (or -inf) the key is hidden. NaN does not hide: it is an additive NaN that poisons the rows
// seeing the key, as in zerotuning/reference.py. Bool masks are read as bytes: zero hides.
__device__ __forceinline__ bool mask_hides(uint8_t value) { return value == 0; }
__device__ __forceinline__ bool mask_hides(float value) { return value <= -3.40282347e+38f; }
__device__ __forceinline__ bool mask_hides(__half value) { return __half2float(value) <= -65504.0f; }
__device__ __forceinline__ bool mask_hides(__nv_bfloat16 value) {
  return __bfloat162float(value) <= __uint_as_float(0xff7f0000u);  // bf16's lowest, exactly
}

__device__ __forceinline__ float mask_additive(uint8_t) { return 0.0f; }
__device__ __forceinline__ float mask_additive(float value) { return value; }
__device__ __forceinline__ float mask_additive(__half value) { return __half2float(value); }
__device__ __forceinline__ float mask_additive(__nv_bfloat16 value) {
  return __bfloat162float(value);
}

// ---- warp reductions --------------------------------------------------------------------------

// Sum over aligned groups of `Width` consecutive lanes (Width a power of two <= 32).
template <int Width>
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
  for (int offset = Width / 2; offset > 0; offset /= 2) {
    x += __shfl_xor_sync(0xffffffffu, x, offset);
  }
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  }
  return x;
}

__device__ __forceinline__ float warp_sum(float x) { return group_sum<32>(x); }

}  // namespace zerotuning::cuda
