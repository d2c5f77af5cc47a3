// split_kv_kernel instantiations for __nv_bfloat16 (one file per element type: parallel compiles).
#include "split_kv_kernel.cuh"

namespace zerotuning::cuda {

template void launch_split_kv_typed<__nv_bfloat16>(const SplitKvArgs&, cudaStream_t);
template int split_kv_blocks_per_sm_typed<__nv_bfloat16>(int);

}  // namespace zerotuning::cuda
