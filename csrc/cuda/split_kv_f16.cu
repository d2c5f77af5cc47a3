// split_kv_kernel instantiations for __half (one file per element type: parallel compiles).
#include "split_kv_kernel.cuh"

namespace zerotuning::cuda {

template void launch_split_kv_typed<__half>(const SplitKvArgs&, cudaStream_t);
template int split_kv_blocks_per_sm_typed<__half>(int);

}  // namespace zerotuning::cuda
