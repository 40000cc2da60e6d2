#pragma once
// In-place ReLU over n contiguous elements: the twin of CpuForward's relu, NaN stays
// NaN (as torch.relu), which cudnnActivationForward does not promise. Float and double
// data (launch_relu), and 16-bit storage (launch_relu16, see fmt16.cuh).
#include <cuda_runtime.h>

#include <cstdint>

#include "fmt16.cuh"

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

// In-place ReLU on n 16-bit values, on the bits: negative values (-inf included) and -0
// become +0; NaN keeps its exact bits (as torch.relu keeps NaN); +inf stays. Checks its
// arguments as every 16-bit launcher (fmt16.cuh).
void launch_relu16(uint16_t* x, int64_t n, Fmt16 f, cudaStream_t stream);

}  // namespace dalr::kernels
