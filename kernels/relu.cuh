#pragma once
// In-place ReLU over n contiguous elements: the twin of CpuForward's relu, NaN stays
// NaN (as torch.relu), which cudnnActivationForward does not promise.
#include <cuda_runtime.h>

#include <cstdint>

namespace dalr::kernels {

#ifdef __CUDACC__
// The one NaN-keeping ReLU of the device code (the CPU's is cpu::relu_keep_nan): every
// kernel that applies a ReLU to a widened value calls it. (relu16 works on the 16-bit
// patterns directly, with the same result.)
template <typename T>
__device__ __forceinline__ T relu_keep_nan(T v) {
  return v > T(0) ? v : (v == v ? T(0) : v);
}
#endif

// x is a device pointer. Checks the launch.
template <typename T>
void launch_relu(T* x, int64_t n, cudaStream_t stream);

}  // namespace dalr::kernels
