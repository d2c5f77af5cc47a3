// CUDA implementation of torch.ops.zerotuning.sink_attention, plus
// torch.ops.zerotuning.sink_attention_cuda_path, which names the path a call would take.
//
// Values that the CPU op checks on the host (log_gamma finite, sink_index in [-1, len_k)) are
// checked inside the kernels with CUDA_KERNEL_ASSERT instead: reading them here would add a
// device-to-host sync to every attention call. A failed check is a device-side assert.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "../sink_attention_call.h"
#include "cuda_path.h"
#include "run_paths.h"

namespace zerotuning::cuda {
namespace {

SinkAttentionCall prepare(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& log_gamma, const std::optional<at::Tensor>& sink_index,
                          const std::optional<at::Tensor>& attn_mask, bool is_causal,
                          std::optional<double> scale, std::optional<double> softcap,
                          std::optional<int64_t> sliding_window) {
  SinkAttentionCall call = prepare_sink_attention(q, k, v, log_gamma, sink_index, attn_mask, is_causal,
                                                  scale, softcap, sliding_window,
                                                  /*check_values=*/false);
  TORCH_CHECK(q.is_cuda(), "zerotuning.sink_attention: the CUDA implementation got q on ", q.device());
  return call;
}

std::tuple<at::Tensor, at::Tensor> sink_attention_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& log_gamma,
    const std::optional<at::Tensor>& sink_index, const std::optional<at::Tensor>& attn_mask,
    bool is_causal, std::optional<double> scale, std::optional<double> softcap,
    std::optional<int64_t> sliding_window) {
  SinkAttentionCall call =
      prepare(q, k, v, log_gamma, sink_index, attn_mask, is_causal, scale, softcap, sliding_window);
  const SinkAttentionParams& p = call.params;
  if (p.batch == 0 || p.heads_q == 0 || p.len_q == 0) return {call.out, call.lse};
  const c10::cuda::CUDAGuard device_guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  switch (choose_cuda_path(call)) {
    case CudaPath::SplitKv: run_split_kv(call, stream); break;
    case CudaPath::FlashMerge: run_sink_merge(call, RestKernel::Flash, stream); break;
    case CudaPath::CudnnMerge: run_sink_merge(call, RestKernel::Cudnn, stream); break;
  }
  return {call.out, call.lse};
}

std::string sink_attention_cuda_path(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& log_gamma,
    const std::optional<at::Tensor>& sink_index, const std::optional<at::Tensor>& attn_mask,
    bool is_causal, std::optional<double> scale, std::optional<double> softcap,
    std::optional<int64_t> sliding_window) {
  const SinkAttentionCall call =
      prepare(q, k, v, log_gamma, sink_index, attn_mask, is_causal, scale, softcap, sliding_window);
  const c10::cuda::CUDAGuard device_guard(q.device());
  return cuda_path_name(choose_cuda_path(call));
}

}  // namespace
}  // namespace zerotuning::cuda

TORCH_LIBRARY_FRAGMENT(zerotuning, m) {
  m.def(
      "sink_attention_cuda_path(Tensor q, Tensor k, Tensor v, Tensor log_gamma, "
      "Tensor? sink_index=None, Tensor? attn_mask=None, bool is_causal=False, float? scale=None, "
      "float? softcap=None, int? sliding_window=None) -> str");
}

TORCH_LIBRARY_IMPL(zerotuning, CUDA, m) {
  m.impl("sink_attention", &zerotuning::cuda::sink_attention_cuda);
  m.impl("sink_attention_cuda_path", &zerotuning::cuda::sink_attention_cuda_path);
}
