// The op's schema, owned here once; CPU and CUDA files only register implementations.
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "cpu/sink_attention_cpu_kernel.h"

// Importing zerotuning._C loads this library, which registers the ops with the dispatcher.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(zerotuning, m) {
  m.def(
      "sink_attention(Tensor q, Tensor k, Tensor v, Tensor log_gamma, Tensor? sink_index=None, "
      "Tensor? attn_mask=None, bool is_causal=False, float? scale=None, float? softcap=None, "
      "int? sliding_window=None) -> (Tensor, Tensor)");
  // Its gradients (q, k, v, log_gamma) from the forward's saved out and lse; autograd calls it
  // through the formula registered in zerotuning/ops.py.
  m.def(
      "sink_attention_backward(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k, Tensor v, "
      "Tensor log_gamma, Tensor out, Tensor lse, Tensor? sink_index=None, Tensor? attn_mask=None, "
      "bool is_causal=False, float? scale=None, float? softcap=None, int? sliding_window=None) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // Attention over vLLM's paged CPU KV cache (csrc/cpu/sink_attention_paged_kernel.h): query
  // [tokens, heads, head_dim], kv_cache [num_blocks, kv_heads, block_size, 2 * head_dim], causal
  // per request, log_gamma[h] on each request's position 0; writes output in place.
  m.def(
      "sink_attention_paged(Tensor query, Tensor kv_cache, Tensor block_table, Tensor query_start_loc, "
      "Tensor seq_lens, Tensor log_gamma, float scale, float softcap, Tensor(a!) output) -> ()");
  // Which vector instructions the CPU kernel was built for (the build picks the machine's best).
  m.def("cpu_isa() -> str", [] { return std::string(zerotuning::cpu::compiled_isa()); });
}
