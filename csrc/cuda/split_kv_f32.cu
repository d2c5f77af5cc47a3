// split_kv_kernel instantiations for float (one file per element type: parallel compiles).
#include "split_kv_kernel.cuh"

namespace zerotuning::cuda {

template void launch_split_kv_typed<float>(const SplitKvArgs&, cudaStream_t);
template int split_kv_blocks_per_sm_typed<float>(int);

}  // namespace zerotuning::cuda
